"""The emails of the identity flows reach a real SMTP server through outbox → RQ → worker, and
their links work: on PostgreSQL, and once more on the embedded default, a SQLite file (see also
tests/e2e/test_embedded_default.py, which runs `make run`'s processes)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import select

from tests.support.accounts import STRONG_PASSWORD, Account, log_in
from tests.support.jobs import FAST_JOBS
from tests.support.smtp import SmtpSink
from webapp.extensions import db
from webapp.outbox.models import SENT, EmailDelivery, OutboxMessage
from webapp.outbox.sealing import open_payload, seal
from webapp.security.encryption import DecryptionError


@pytest.fixture(params=["postgresql", "sqlite"])
def jobs_app(
    request: pytest.FixtureRequest,
    jobs_app: Flask,
    make_app: Callable[..., Flask],
    smtp_sink: SmtpSink,
    tmp_path: Path,
) -> Iterator[Flask]:
    """The shared `app` (tests/support/application.py) on PostgreSQL, or the same settings on a
    fresh SQLite file."""
    if request.param == "postgresql":
        yield jobs_app
        return
    lite = make_app(
        database_url=f"sqlite:///{tmp_path / 'gatehouse.db'}", smtp_url=smtp_sink.url, **FAST_JOBS
    )
    with lite.app_context():
        upgrade()
    yield lite
    with lite.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def make_user(jobs_app: Flask) -> Callable[..., Account]:
    """The shared `make_user` (tests/support/accounts.py), on whichever database `jobs_app` uses."""
    from webapp.context import SYSTEM
    from webapp.users import service

    def build(*, login: bool = True) -> Account:
        email = f"user-{uuid.uuid4().hex[:8]}@example.com"
        with jobs_app.app_context():
            user = service.create_user(
                db.session, SYSTEM, email=email, name="Test User", password=STRONG_PASSWORD
            )
            account = Account(user.id, email, STRONG_PASSWORD, "user")
            db.session.remove()
        if login:
            log_in(jobs_app.test_client(), account)
        return account

    return build


def _token(link: str) -> str:
    return parse_qs(urlsplit(link).query)["token"][0]


def _about(smtp_sink, recipient: str, subject: str):
    return [m for m in smtp_sink.to(recipient) if m.subject == subject]


def test_a_new_user_verifies_by_the_emailed_link_and_then_signs_in(jobs_app, smtp_sink, work_jobs):
    client = jobs_app.test_client()
    registered = client.post(
        "/api/v1/auth/register",
        json={"email": "Grace@Example.com", "password": STRONG_PASSWORD, "name": "Grace"},
        headers={"X-Request-ID": "req-register-0001"},
    )
    assert registered.status_code == 201, registered.json

    work_jobs(jobs_app)

    [email] = smtp_sink.wait_for(1)
    assert email.rcpt_tos == ["Grace@Example.com"]
    assert email.subject == "Confirm your email address for Gatehouse"
    assert email.link.startswith("https://gatehouse.test/verify-email?token=")
    assert email.link in email.html
    assert "Hello Grace" in email.text
    verified = client.post("/api/v1/auth/verify-email", json={"token": _token(email.link)})
    assert verified.status_code == 204
    login = client.post(
        "/api/v1/auth/login", json={"email": "grace@example.com", "password": STRONG_PASSWORD}
    )
    assert login.status_code == 200, login.json

    work_jobs(jobs_app)
    welcome = smtp_sink.wait_for(2)[1]
    assert welcome.subject == "Welcome to Gatehouse"


def test_a_forgotten_password_is_reset_through_the_emailed_link(
    jobs_app, smtp_sink, work_jobs, make_user
):
    account = make_user(login=False)
    client = jobs_app.test_client()
    assert (
        client.post("/api/v1/auth/password-reset", json={"email": account.email}).status_code == 202
    )

    work_jobs(jobs_app)

    [email] = _about(smtp_sink, account.email, "Reset your Gatehouse password")
    assert email.link.startswith("https://gatehouse.test/reset-password?token=")
    new_password = "another-Quiet-lake-71"
    confirmed = client.post(
        "/api/v1/auth/password-reset/confirm",
        json={"token": _token(email.link), "password": new_password},
    )
    assert confirmed.status_code == 200
    login = client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": new_password}
    )
    assert login.status_code == 200


def test_a_sign_in_from_a_new_device_sends_an_alert(jobs_app, smtp_sink, work_jobs, make_user):
    account = make_user()  # the first sign-in is not news
    client = jobs_app.test_client()
    second = client.post(
        "/api/v1/auth/login",
        json={"email": account.email, "password": account.password},
        headers={"User-Agent": "Unfamiliar Browser/1.0"},
        environ_base={"REMOTE_ADDR": "203.0.113.9"},
    )
    assert second.status_code == 200

    work_jobs(jobs_app)

    [alert] = _about(smtp_sink, account.email, "New sign-in to your Gatehouse account")
    assert "203.0.113.9" in alert.text
    assert "Unfamiliar Browser/1.0" in alert.text
    assert alert.link == "https://gatehouse.test/sessions"


def test_a_sent_message_is_recorded_and_loses_its_token(jobs_app, smtp_sink, work_jobs, make_user):
    account = make_user(login=False)
    client = jobs_app.test_client()
    client.post("/api/v1/auth/password-reset", json={"email": account.email})

    work_jobs(jobs_app)

    [email] = _about(smtp_sink, account.email, "Reset your Gatehouse password")
    with jobs_app.app_context():
        message = db.session.scalar(
            select(OutboxMessage).where(OutboxMessage.template == "password_reset")
        )
        delivery = db.session.scalar(
            select(EmailDelivery).where(EmailDelivery.message_id == message.id)
        )
        assert message.status == SENT
        assert message.sent_at is not None
        assert _token(email.link) not in str(message.payload)
        assert delivery.status == "sent"
        assert delivery.send_attempts == 1
        assert delivery.smtp_message_id == email.message_id
        assert delivery.smtp_response.startswith("250")
        db.session.remove()


def test_a_message_queued_before_sealing_existed_still_sends_and_then_loses_its_token(
    jobs_app, smtp_sink, work_jobs
):
    """Rows written by an older release hold their token in the clear: they still go out."""
    link = "https://gatehouse.test/verify-email?token=legacy-token"
    with jobs_app.app_context():
        message = OutboxMessage(
            template="verify_email",
            recipient="old@example.com",
            idempotency_key="verify_email:legacy",
            payload={
                "name": "Old",
                "token": "legacy-token",
                "link": link,
                "expires_at": "2030-01-01",
            },
            queue="high",
        )
        db.session.add(message)
        db.session.commit()
        message_id = message.id
        db.session.remove()

    work_jobs(jobs_app)

    [email] = smtp_sink.wait_for(1)
    assert email.link == link
    with jobs_app.app_context():
        stored = db.session.get(OutboxMessage, message_id)
        assert stored.status == SENT
        assert "legacy-token" not in str(stored.payload)
        assert stored.payload["link"] == "https://gatehouse.test/verify-email"
        db.session.remove()


def test_the_secret_fields_of_a_queued_message_are_stored_sealed(app, queue_email):
    message_id = queue_email(
        "new_login",
        payload={
            "name": "Ada",
            "ip": "203.0.113.7",
            "user_agent": "Test Browser",
            "at": "2030-01-01T00:00:00+00:00",
            "link": "https://gatehouse.test/sessions",
        },
    )
    with app.app_context():
        stored = db.session.get(OutboxMessage, message_id).payload
        db.session.remove()
    assert set(stored) == {"name", "ip", "user_agent", "at", "sealed"}
    assert stored["sealed"].startswith("v1.test.")
    assert "gatehouse.test/sessions" not in str(stored)


def test_explicit_secret_fields_are_sealed_and_bound_to_their_message(app_ctx):
    message_id = uuid.uuid4()
    payload = {"name": "Ada", "code": "123456", "link": "https://gatehouse.test/x?token=t"}

    stored = seal(payload, message_id, secret_fields={"code"})

    assert set(stored) == {"name", "link", "sealed"}  # only what was named
    assert "123456" not in str(stored)
    assert open_payload(stored, message_id) == payload
    with pytest.raises(DecryptionError):  # copied onto another message, it does not open
        open_payload(stored, uuid.uuid4())
    with pytest.raises(ValueError, match="reserved"):
        seal({"sealed": "x"}, message_id)


def test_an_email_change_is_confirmed_by_the_link_to_the_new_address_and_the_old_one_is_told(
    jobs_app, smtp_sink, work_jobs, make_user
):
    account = make_user()
    client = jobs_app.test_client()
    requested = client.post(
        "/api/v1/users/me/email", json={"email": "moved@example.com"}, headers=account.headers
    )
    assert requested.status_code == 202, requested.json

    work_jobs(jobs_app)
    [link] = _about(smtp_sink, "moved@example.com", "Confirm your new email address for Gatehouse")
    assert link.link.startswith("https://gatehouse.test/verify-email?token=")
    assert (
        client.post("/api/v1/auth/verify-email", json={"token": _token(link.link)}).status_code
        == 204
    )

    work_jobs(jobs_app)
    [notice] = _about(
        smtp_sink, account.email, "Gatehouse security notice: your email address was changed"
    )
    assert "moved@example.com" in notice.text
    assert "http" not in notice.text
