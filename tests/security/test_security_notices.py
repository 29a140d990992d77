"""Owner notices: the owner learns of every change to how the account
is secured — password changed or reset, TOTP on or off, recovery codes regenerated or used, an
API key created or rotated — by an email to the address on file, naming the time, IP and client,
carrying no secret and no link (nothing to phish with, nothing that signs in).

OWASP ASVS 4.0.3: 2.2.3 (notify users after updates to authentication details), 2.5.5
(notification when a credential is reset or changed), 8.3.x (no secrets in emails). The emails
go through the real outbox, RQ and an SMTP server (aiosmtpd).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest

from jobs import emails
from tests.support.accounts import STRONG_PASSWORD
from webapp.auth import notices
from webapp.config import Settings
from webapp.context import Origin
from webapp.extensions import db

MFA = "/api/v1/auth/mfa"
IP, AGENT = "198.51.100.23", "Notice Test Browser/1.0"
FROM = {"headers": {"User-Agent": AGENT}, "environ_base": {"REMOTE_ADDR": IP}}
NEW_PASSWORD = "quiet-Harbour-41-meadow"


def call(client: Any, method: str, path: str, account: Any, **kwargs: Any) -> Any:
    headers = {**account.headers, "User-Agent": AGENT}
    return client.open(
        path, method=method, headers=headers, environ_base={"REMOTE_ADDR": IP}, **kwargs
    )


def notices_of(outbox: Any, email: str) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for message in outbox(notices.TEMPLATE, recipient=email):
        found.setdefault(message.payload["event"], []).append(message)
    return found


def code_now(secret: str) -> str:
    return pyotp.TOTP(secret).at(datetime.now(UTC))


def test_every_security_change_queues_a_notice_with_time_ip_and_client(
    app, client, outbox, make_user
):
    account = make_user()
    secrets: list[str] = [NEW_PASSWORD]

    created = call(
        client, "POST", "/api/v1/api-keys/", account, json={"name": "ci", "scopes": ["users:read"]}
    )
    secrets.append(created.json["key"])
    rotated = call(client, "POST", f"/api/v1/api-keys/{created.json['id']}/rotate", account)
    secrets.append(rotated.json["key"])
    secret = call(client, "POST", f"{MFA}/totp", account).json["secret"]
    codes = call(client, "POST", f"{MFA}/totp/confirm", account, json={"code": code_now(secret)})
    regenerated = call(client, "POST", f"{MFA}/recovery-codes", account).json["recovery_codes"]
    secrets += [secret, *codes.json["recovery_codes"], *regenerated]
    step = client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": STRONG_PASSWORD}, **FROM
    ).json
    used = client.post(
        "/api/v1/auth/login/mfa",
        json={"mfa_token": step["mfa_token"], "recovery_code": regenerated[0]},
        **FROM,
    )
    assert used.status_code == 200
    disabled = call(client, "DELETE", f"{MFA}/totp", account, json={"password": STRONG_PASSWORD})
    assert disabled.status_code == 204
    changed = call(
        client,
        "POST",
        "/api/v1/auth/password",
        account,
        json={"current_password": STRONG_PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert changed.status_code == 204
    client.post("/api/v1/auth/password-reset", json={"email": account.email})
    [reset_mail] = outbox("password_reset", recipient=account.email)
    token = parse_qs(urlsplit(reset_mail.payload["link"]).query)["token"][0]
    secrets.append(token)
    reset = client.post(
        "/api/v1/auth/password-reset/confirm",
        json={"token": token, "password": "amber-Falcon-58-river"},
        **FROM,
    )
    assert reset.status_code == 200

    found = notices_of(outbox, account.email)
    assert sorted(found) == sorted(
        [
            "api_key_created",
            "api_key_rotated",
            "totp_enabled",
            "recovery_codes_regenerated",
            "recovery_code_used",
            "totp_disabled",
            "password_changed",
            "password_reset",
        ]
    )
    for event, [message] in found.items():
        assert message.payload["ip"] == IP, event
        assert message.payload["user_agent"] == AGENT, event
        assert datetime.fromisoformat(message.payload["at"]), event
        assert message.queue == "default"
        flat = str(message.payload)
        assert not [s for s in secrets if s in flat], event
        assert "http" not in flat, event
    [key_notice] = found["api_key_created"]
    assert dict(map(tuple, key_notice.payload["details"]))["Key"].startswith("ci (gh_live_")
    [reset_notice] = found["password_reset"]
    assert dict(map(tuple, reset_notice.payload["details"])) == {
        "Sessions signed out": "1",  # the password change had ended the MFA sign-in's
        "API keys revoked": "1",
    }
    [used_notice] = found["recovery_code_used"]
    assert ["Recovery codes left", "9"] in used_notice.payload["details"]


def test_an_administrators_mfa_reset_is_notified_to_the_owner(app, client, outbox, admin, member):
    secret = client.post(f"{MFA}/totp", headers=member.headers).json["secret"]
    client.post(f"{MFA}/totp/confirm", json={"code": code_now(secret)}, headers=member.headers)

    assert client.delete(f"/api/v1/users/{member.id}/mfa", headers=admin.headers).status_code == 204

    [notice] = notices_of(outbox, member.email)["totp_disabled"]
    assert ["Removed by", "an administrator"] in notice.payload["details"]


def test_the_notice_helper_writes_to_the_address_it_is_given(app, outbox):
    """The email-change flow tells the *old* address: the helper takes the recipient as given."""
    with app.app_context():
        notices.notify(
            db.session,
            Origin(ip="192.0.2.1", user_agent="UA"),
            "email_changed",
            recipient="old@example.com",
            name="Ada",
        )
        db.session.commit()
        db.session.remove()
        with pytest.raises(ValueError, match="unknown security event"):
            notices.notify(db.session, Origin(), "nope", recipient="a@example.com", name="A")
        db.session.remove()
    [message] = outbox(notices.TEMPLATE)
    assert message.recipient == "old@example.com"
    assert message.payload["event"] == "email_changed"


@pytest.mark.parametrize("event", sorted(notices.EVENTS))
def test_every_notice_renders_with_its_facts_and_without_any_link(event):
    payload = {
        "name": "Ada",
        "event": event,
        "headline": notices.EVENTS[event].headline,
        "summary": notices.EVENTS[event].summary,
        "at": "2030-01-01T10:20:00+00:00",
        "ip": "203.0.113.7",
        "user_agent": "Test <Browser>",
        "details": [["Sessions signed out", "3"]],
    }
    rendered = emails.render(
        notices.TEMPLATE,
        payload,
        recipient="ada@example.com",
        settings=Settings(public_base_url="https://id.example.com"),
    )
    assert rendered.subject == f"Gatehouse security notice: {notices.EVENTS[event].headline}"
    for body in (rendered.text, rendered.html):
        assert "Ada" in body
        assert "2030-01-01 10:20 UTC" in body
        assert "203.0.113.7" in body
        assert "Sessions signed out" in body
        assert "http" not in body.replace("http-equiv", "")
        assert "href" not in body
    assert "Test <Browser>" in rendered.text
    assert "Test &lt;Browser&gt;" in rendered.html


def test_a_reset_notice_reaches_the_owner_through_smtp(jobs_app, smtp_sink, work_jobs, make_user):
    account = make_user(login=False)
    client = jobs_app.test_client()
    client.post("/api/v1/auth/password-reset", json={"email": account.email})
    work_jobs(jobs_app)
    [link_mail] = [m for m in smtp_sink.to(account.email) if "Reset your" in m.subject]
    token = parse_qs(urlsplit(link_mail.link).query)["token"][0]

    confirmed = client.post(
        "/api/v1/auth/password-reset/confirm",
        json={"token": token, "password": NEW_PASSWORD},
        **FROM,
    )
    assert confirmed.status_code == 200
    work_jobs(jobs_app)

    [notice] = [m for m in smtp_sink.to(account.email) if "security notice" in m.subject]
    assert notice.subject == "Gatehouse security notice: your password was reset"
    assert IP in notice.text
    assert AGENT in notice.text
    assert "API keys revoked: 0" in notice.text
    assert "http" not in notice.text
    assert "href" not in notice.html
    assert token not in notice.text
