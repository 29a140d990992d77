"""Security notices: an email to the owner after each change to how the account is protected.

One outbox template (`security_notice`) serves every event; the wording of an event lives in
`EVENTS`, the facts (when, from which IP and client, what else happened) in the payload. The
emails carry no links at all: a notice that says "this was not you? click here" is what a
phishing email looks like, and a link that signs in would hand the attacker a way back.

Call it inside the use case's unit of work, before its commit, so the notice is sent exactly
when the change is:

    notices.notify(db, origin, "email_changed", recipient=old_address, name=user.name)

`recipient` is the address on file *before* the change (an attacker who changes the email must
not be the one told about it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from webapp.context import Origin
from webapp.db import DbSession, new_id, utcnow
from webapp.outbox import service as outbox
from webapp.outbox.models import OutboxMessage

TEMPLATE = "security_notice"


@dataclass(frozen=True)
class Event:
    headline: str  # completes the subject "Gatehouse security notice: …"
    summary: str  # the first sentence of the email


EVENTS: dict[str, Event] = {
    "password_changed": Event(
        "your password was changed", "The password of your account was changed."
    ),
    "password_reset": Event(
        "your password was reset",
        "The password of your account was reset with an emailed reset link. Every session was "
        "signed out and every API key revoked.",
    ),
    "email_changed": Event(
        "your email address was changed",
        "The email address of your account was changed; this address no longer receives its "
        "emails.",
    ),
    "totp_enabled": Event(
        "two-factor authentication was turned on",
        "An authenticator app was set up as the second factor of your account.",
    ),
    "totp_disabled": Event(
        "two-factor authentication was turned off",
        "The second factor of your account was removed, with its recovery codes.",
    ),
    "recovery_codes_regenerated": Event(
        "new recovery codes were created",
        "New recovery codes were created for your account; the previous ones no longer work.",
    ),
    "recovery_code_used": Event(
        "a recovery code was used",
        "One of your recovery codes was used to confirm a sign-in; it cannot be used again.",
    ),
    "api_key_created": Event(
        "an API key was created", "A new API key that acts as you was created."
    ),
    "api_key_rotated": Event(
        "an API key was given a new secret", "One of your API keys was given a new secret."
    ),
}


def notify(
    db: DbSession,
    origin: Origin,
    event: str,
    *,
    recipient: str,
    name: str,
    details: Sequence[tuple[str, str]] = (),
) -> OutboxMessage:
    """Queue the notice of `event` (a key of `EVENTS`) in the caller's transaction. `details` are
    extra (label, value) lines; never put a secret in them."""
    if event not in EVENTS:
        raise ValueError(f"unknown security event {event!r}")
    wording = EVENTS[event]
    return outbox.enqueue(
        db,
        origin,
        template=TEMPLATE,
        recipient=recipient,
        idempotency_key=f"{TEMPLATE}:{event}:{new_id()}",
        payload={
            "name": name,
            "event": event,
            "headline": wording.headline,
            "summary": wording.summary,
            "at": utcnow().isoformat(),
            "ip": origin.ip,
            "user_agent": origin.user_agent,
            "details": [[label, value] for label, value in details],
        },
    )
