"""No live token at rest: verification and password-reset tokens (and the links that carry them)
are sealed in pending and retrying outbox rows and gone from sent and dead-lettered ones, so no
`pg_dump` backup holds one that works.

OWASP ASVS 4.0.3: 6.1.1 / 6.1.3 (sensitive data encrypted at rest), 6.2.1 (authenticated
encryption, failing securely), 2.5.1 / 2.5.2-style recovery secrets not recoverable from storage,
8.3.4 (sensitive data identified and protected, backups included), 7.1.1 (no secrets in logs).

The attack: an operator or anyone holding a backup takes a plain-SQL dump while emails are queued
(or dead), greps it for token-shaped strings and tries every one against the API. None may work,
while the token that was really emailed (delivered through the real SMTP sink) does.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from urllib.parse import parse_qs, urlsplit

import pytest
from rq.job import Job
from sqlalchemy import select

from jobs.settings import jobs_settings_of
from tests.support.accounts import STRONG_PASSWORD
from webapp.extensions import db
from webapp.outbox.models import DEAD, PENDING, OutboxMessage

VERIFY = "/api/v1/auth/verify-email"
RESET = "/api/v1/auth/password-reset"
CONFIRM = "/api/v1/auth/password-reset/confirm"
NEW_PASSWORD = "another-Quiet-lake-71"
# secrets.token_urlsafe(32): 43 base64url characters, not part of a longer base64url run.
TOKEN_SHAPED = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")


def pg_dump(database_url: str) -> str:
    """A plain-SQL dump (uncompressed, so a token in it is there to be read)."""
    binary = shutil.which("pg_dump")
    if binary is None:
        pytest.fail("pg_dump is not on PATH (`make tools` installs postgresql-client)")
    done = subprocess.run(
        [binary, "--no-owner", "--no-privileges", "--format=plain", "--dbname", database_url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "COPY public.outbox_messages" in done.stdout
    return done.stdout


def token_of(link: str) -> str:
    return parse_qs(urlsplit(link).query)["token"][0]


def slug(response) -> str:
    return response.json["type"].rsplit("/", 1)[-1]


def assert_no_candidate_works(client, dump: str) -> None:
    for candidate in sorted(set(TOKEN_SHAPED.findall(dump))):
        verified = client.post(VERIFY, json={"token": candidate})
        assert verified.status_code == 422, f"a token from the dump verifies an email: {candidate}"
        assert slug(verified) == "invalid-token"
        reset = client.post(CONFIRM, json={"token": candidate, "password": NEW_PASSWORD})
        assert reset.status_code == 422, f"a token from the dump resets a password: {candidate}"
        assert slug(reset) == "invalid-token"


def emailed_tokens(smtp_sink, new_user: str, resetting_user: str) -> tuple[str, str]:
    """The tokens of the verification and reset emails the sink received."""
    [verification] = [m for m in smtp_sink.to(new_user) if "Confirm" in m.subject]
    [reset] = [m for m in smtp_sink.to(resetting_user) if "Reset" in m.subject]
    return token_of(verification.link), token_of(reset.link)


def assert_emailed_tokens_work(client, verify_token: str, reset_token: str) -> None:
    assert client.post(VERIFY, json={"token": verify_token}).status_code == 204
    confirmed = client.post(CONFIRM, json={"token": reset_token, "password": NEW_PASSWORD})
    assert confirmed.status_code == 200, confirmed.json


def queue_both_token_emails(client, make_user) -> tuple[str, str]:
    """A registration (verification email) and a password reset request; returns the emails."""
    registered = client.post(
        "/api/v1/auth/register",
        json={"email": "grace@example.com", "password": STRONG_PASSWORD, "name": "Grace"},
    )
    assert registered.status_code == 201, registered.json
    account = make_user(login=False)
    assert client.post(RESET, json={"email": account.email}).status_code == 202
    return "grace@example.com", account.email


def stored_rows(app) -> list[OutboxMessage]:
    with app.app_context():
        rows = list(db.session.scalars(select(OutboxMessage).order_by(OutboxMessage.created_at)))
        db.session.expunge_all()
        db.session.remove()
        return rows


def test_a_dump_taken_while_emails_are_queued_holds_no_working_token(
    jobs_app, smtp_sink, work_jobs, make_user, database_url, caplog
):
    client = jobs_app.test_client()
    new_user, resetting_user = queue_both_token_emails(client, make_user)
    queued = [r for r in stored_rows(jobs_app) if r.template in ("verify_email", "password_reset")]
    assert [r.status for r in queued] == [PENDING, PENDING]  # no worker has run yet

    dump = pg_dump(database_url)

    assert_no_candidate_works(client, dump)
    for row in queued:
        assert "token" not in row.payload
        assert "?token=" not in str(row.payload)

    # The worker sends the real emails; their tokens work, and were never in the dump.
    with caplog.at_level(logging.DEBUG):
        work_jobs(jobs_app)
    verify_token, reset_token = emailed_tokens(smtp_sink, new_user, resetting_user)
    assert verify_token not in dump
    assert reset_token not in dump
    # Everything the worker, RQ and the app logged (not the test's SMTP server, which logs DATA).
    logged = "\n".join(
        f"{r.getMessage()} {r.__dict__}" for r in caplog.records if r.name != "mail.log"
    )
    assert verify_token not in logged
    assert reset_token not in logged
    assert_emailed_tokens_work(client, verify_token, reset_token)


def test_a_dead_letter_holds_no_working_token_in_the_database_or_in_redis(
    jobs_app, smtp_sink, work_jobs, make_user, database_url, rq_connection
):
    from jobs import dead_letters

    smtp_sink.reply = "550 5.7.1 Mailbox unavailable"
    client = jobs_app.test_client()
    new_user, resetting_user = queue_both_token_emails(client, make_user)

    work_jobs(jobs_app)

    dead = [r for r in stored_rows(jobs_app) if r.template in ("verify_email", "password_reset")]
    assert sorted(r.template for r in dead) == ["password_reset", "verify_email"]
    assert {r.status for r in dead} == {DEAD}
    assert smtp_sink.received == []
    dump = pg_dump(database_url)
    assert_no_candidate_works(client, dump)
    # Not even sealed: a dead token email keeps no token at all (a replay mints a new one).
    assert all("sealed" not in r.payload and "token" not in r.payload for r in dead)
    # The failed jobs in RQ's registry carry the message id only, never the payload.
    for row in dead:
        job = Job.fetch(str(row.id), connection=rq_connection)
        assert job.args == (str(row.id),)
        assert job.kwargs == {}
        assert "?token=" not in repr(job.meta) + (job.latest_result().exc_string or "")

    # Replayed once the mail server is fixed, the emails carry a working token (not in the dump).
    smtp_sink.reply = "250 2.0.0 OK"
    with jobs_app.app_context():
        settings = jobs_settings_of(jobs_app)
        assert dead_letters.requeue_all(db.session, rq_connection, settings) >= 2
        db.session.remove()
    work_jobs(jobs_app)
    verify_token, reset_token = emailed_tokens(smtp_sink, new_user, resetting_user)
    assert verify_token not in dump
    assert reset_token not in dump
    assert_emailed_tokens_work(client, verify_token, reset_token)


def test_a_dead_verification_email_whose_address_was_verified_meanwhile_is_not_replayed(
    jobs_app, smtp_sink, work_jobs, rq_connection, outbox
):
    from jobs import dead_letters
    from webapp.db import utcnow
    from webapp.errors import Conflict
    from webapp.users.models import User

    smtp_sink.reply = "550 5.7.1 Mailbox unavailable"
    client = jobs_app.test_client()
    registered = client.post(
        "/api/v1/auth/register",
        json={"email": "grace@example.com", "password": STRONG_PASSWORD, "name": "Grace"},
    )
    assert registered.status_code == 201
    work_jobs(jobs_app)
    [message] = outbox("verify_email")
    assert message.status == DEAD
    with jobs_app.app_context():  # verified another way (an administrator, a later email)
        db.session.scalar(select(User)).email_verified_at = utcnow()
        db.session.commit()
        settings = jobs_settings_of(jobs_app)
        with pytest.raises(Conflict) as refused:
            dead_letters.requeue(db.session, rq_connection, settings, message.id)
        assert refused.value.slug == "job-not-replayable"
        assert dead_letters.requeue_all(db.session, rq_connection, settings) == 0
        db.session.remove()

    [kept] = outbox("verify_email")
    assert kept.status == DEAD
    assert kept.last_error == "not replayed: the address is verified already"
