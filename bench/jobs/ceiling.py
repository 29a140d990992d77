"""The SMTP sink's own ceiling: one plain `smtplib` connection sending one composed email over
and over, as fast as the sink answers. No outbox, no queue, no database: what is left is the
sink's and the client's SMTP work, the most any pipeline into the same sink can reach.

    python -m bench.jobs.ceiling PORT MESSAGES   # prints emails per second

Runs in a process of its own (as the workers do), so that it does not share the sink's GIL.
"""

from __future__ import annotations

import smtplib
import sys
import time

from jobs.emails import Envelope, compose
from jobs.settings import JobsSettings
from webapp.config import Settings


def feed(port: int, messages: int) -> float:
    """Send `messages` copies of a `new_login` email; returns emails per second."""
    from tests.support.jobs import EMAIL_PAYLOADS

    jobs_settings = JobsSettings()
    email = compose(
        Envelope(
            template="new_login",
            recipient="ceiling@example.com",
            idempotency_key="bench:ceiling",
            payload=dict(EMAIL_PAYLOADS["new_login"]),
        ),
        Settings(),
        jobs_settings,
    )
    body = email.as_bytes(policy=email.policy.clone(linesep="\r\n"))  # as send_message does
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo()
        started = time.perf_counter()
        for index in range(messages):
            smtp.sendmail(jobs_settings.mail_from, [f"ceiling{index}@example.com"], body)
        elapsed = time.perf_counter() - started
    return messages / elapsed


if __name__ == "__main__":
    print(f"{feed(int(sys.argv[1]), int(sys.argv[2])):.1f}")
