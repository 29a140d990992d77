"""The emails of the identity flows reach a real SMTP server through outbox → RQ → worker, and
their links work."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from sqlalchemy import select

from tests.conftest import STRONG_PASSWORD
from webapp.extensions import db
from webapp.outbox.models import SENT, EmailDelivery, OutboxMessage


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
