"""Encryption key rotation on the real database: `flask --app wsgi keys rotate-encryption`
re-encrypts every encrypted value under the newest key, values re-encrypt lazily when a login
writes them anyway, and the old key can then be dropped."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from flask import Flask
from sqlalchemy import delete, select

from tests.support.accounts import Account
from webapp.extensions import db
from webapp.http.idempotency_records import IdempotencyRecord
from webapp.mfa.models import TotpFactor
from webapp.outbox.models import OutboxMessage
from webapp.security.encryption import EncryptionKeyRing

K1 = "k1:" + base64.b64encode(os.urandom(32)).decode()
K2 = "k2:" + base64.b64encode(os.urandom(32)).decode()
MFA = "/api/v1/auth/mfa"


def forget_queued_emails(app: Flask) -> None:
    """Emails queued through the test app are sealed under its own key, which the keyrings of
    this module do not hold: they would stop every rotation."""
    with app.app_context():
        db.session.execute(delete(OutboxMessage))
        db.session.commit()
        db.session.remove()


@pytest.fixture
def make_user(app: Flask, make_user: Callable[..., Account]) -> Callable[..., Account]:
    """The shared accounts (tests/support/accounts.py), without the emails they queued (see
    `forget_queued_emails`)."""

    def build(*args: object, **kwargs: object) -> Account:
        account = make_user(*args, **kwargs)
        forget_queued_emails(app)
        return account

    return build


def enable_totp(app: Flask, account: Account, *, idempotency_key: str | None = None) -> str:
    client = app.test_client()
    headers = dict(account.headers)
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    secret = client.post(f"{MFA}/totp", headers=headers).json["secret"]
    confirmed = client.post(
        f"{MFA}/totp/confirm", json={"code": pyotp.TOTP(secret).now()}, headers=account.headers
    )
    assert confirmed.status_code == 200, confirmed.get_json()
    return str(secret)


def stored_values(app: Flask) -> dict[str, list[str]]:
    with app.app_context():
        factors = list(db.session.scalars(select(TotpFactor.secret_encrypted)))
        bodies = [b for b in db.session.scalars(select(IdempotencyRecord.response_body)) if b]
        db.session.remove()
    return {"totp": factors, "idempotency": bodies}


def secrets_by_user(app: Flask) -> dict[uuid.UUID, str]:
    from webapp.security.encryption import keyring

    with app.app_context():
        ring = keyring()
        rows = db.session.execute(select(TotpFactor.user_id, TotpFactor.secret_encrypted)).all()
        db.session.remove()
        return {
            user_id: ring.decrypt(
                value, table="totp_factors", column="secret_encrypted", row_id=user_id
            )
            for user_id, value in rows
        }


def test_rotation_re_encrypts_every_row_under_the_newest_key(
    make_app: Callable[..., Flask], make_user: Callable[..., Account]
):
    old_app = make_app(encryption_keys=K1)
    accounts = [make_user() for _ in range(3)]
    secrets = {a.id: enable_totp(old_app, a, idempotency_key=f"k-{a.id}") for a in accounts}
    before = stored_values(old_app)
    assert len(before["totp"]) == 3
    assert len(before["idempotency"]) == 3
    assert all(v.startswith("v1.k1.") for v in before["totp"] + before["idempotency"])

    rotating_app = make_app(encryption_keys=f"{K2},{K1}")
    result = rotating_app.test_cli_runner().invoke(args=["keys", "rotate-encryption"])

    assert result.exit_code == 0, result.output
    assert "totp_factors.secret_encrypted: 3 re-encrypted" in result.output
    assert "idempotency_records.response_body: 3 re-encrypted" in result.output
    after = stored_values(rotating_app)
    assert all(v.startswith("v1.k2.") for v in after["totp"] + after["idempotency"])
    new_only = make_app(encryption_keys=K2)
    assert secrets_by_user(new_only) == secrets
    again = rotating_app.test_cli_runner().invoke(args=["keys", "rotate-encryption"])
    assert "totp_factors.secret_encrypted: 0 re-encrypted" in again.output


def test_rotation_works_in_batches(make_app, make_user):
    old_app = make_app(encryption_keys=K1)
    for _ in range(3):
        enable_totp(old_app, make_user())

    result = (
        make_app(encryption_keys=f"{K2},{K1}")
        .test_cli_runner()
        .invoke(args=["keys", "rotate-encryption", "--batch-size", "2"])
    )

    assert result.exit_code == 0, result.output
    assert "totp_factors.secret_encrypted: 3 re-encrypted" in result.output


def test_plain_idempotency_bodies_are_left_alone(make_app, make_user, admin, client):
    headers = {**admin.headers, "Idempotency-Key": "plain-user-create"}
    created = client.post(
        "/api/v1/users/",
        json={"email": "plain@example.com", "name": "P", "password": "pale-Orbit-93-lantern"},
        headers=headers,
    )
    assert created.status_code == 201
    forget_queued_emails(client.application)

    result = (
        make_app(encryption_keys=K2).test_cli_runner().invoke(args=["keys", "rotate-encryption"])
    )

    assert result.exit_code == 0, result.output
    assert "idempotency_records.response_body: 0 re-encrypted" in result.output


def test_a_value_under_a_key_no_longer_configured_stops_rotation_naming_the_row(
    make_app, make_user
):
    account = make_user()
    enable_totp(make_app(encryption_keys=K1), account)

    result = (
        make_app(encryption_keys=K2).test_cli_runner().invoke(args=["keys", "rotate-encryption"])
    )

    assert result.exit_code != 0
    assert f"totp_factors.secret_encrypted {account.id}" in result.output
    assert "unknown encryption key id 'k1'" in result.output


def test_a_login_re_encrypts_an_old_secret_lazily(make_app, make_user):
    account = make_user()
    secret = enable_totp(make_app(encryption_keys=K1), account)
    new_app = make_app(encryption_keys=f"{K2},{K1}")
    client = new_app.test_client()

    token = client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": account.password}
    ).json["mfa_token"]
    code = pyotp.TOTP(secret).at(datetime.now(UTC) + timedelta(seconds=30))  # a fresh step
    response = client.post("/api/v1/auth/login/mfa", json={"mfa_token": token, "code": code})

    assert response.status_code == 200, response.get_json()
    [stored] = stored_values(new_app)["totp"]
    assert stored.startswith("v1.k2.")
    assert secrets_by_user(make_app(encryption_keys=K2)) == {account.id: secret}


def test_new_encryption_key_prints_an_entry_for_the_variable(app):
    result = app.test_cli_runner().invoke(args=["keys", "new-encryption-key", "--kid", "2027-01"])
    bad = app.test_cli_runner().invoke(args=["keys", "new-encryption-key", "--kid", "bad id"])

    assert result.exit_code == 0
    assert EncryptionKeyRing.parse(result.output.strip()).primary_kid == "2027-01"
    assert bad.exit_code != 0


def test_rotation_covers_the_sealed_secrets_of_queued_emails(
    make_app: Callable[..., Flask], smtp_sink, work_jobs
):
    old_app = make_app(encryption_keys=K1, smtp_url=smtp_sink.url)
    registered = old_app.test_client().post(
        "/api/v1/auth/register",
        json={"email": "ada@example.com", "password": "pale-Orbit-93-lantern", "name": "Ada"},
    )
    assert registered.status_code == 201

    def sealed() -> str:
        with old_app.app_context():
            [payload] = db.session.scalars(select(OutboxMessage.payload))
            db.session.remove()
        return str(payload["sealed"])

    assert sealed().startswith("v1.k1.")
    result = (
        make_app(encryption_keys=f"{K2},{K1}")
        .test_cli_runner()
        .invoke(args=["keys", "rotate-encryption"])
    )
    assert result.exit_code == 0, result.output
    assert "outbox_messages.payload.sealed: 1 re-encrypted" in result.output
    assert sealed().startswith("v1.k2.")

    work_jobs(make_app(encryption_keys=K2, smtp_url=smtp_sink.url))  # the old key is gone
    [email] = smtp_sink.wait_for(1)
    assert email.link.startswith("https://gatehouse.test/verify-email?token=")


def test_rotation_covers_webhook_signing_secrets(make_app: Callable[..., Flask], admin) -> None:
    from webapp.webhooks.models import WebhookEndpoint
    from webapp.webhooks.service import secret_of

    old_app = make_app(encryption_keys=K1)
    created = old_app.test_client().post(
        "/api/v1/webhooks/", json={"url": "https://hooks.example.com/x"}, headers=admin.headers
    )
    assert created.status_code == 201, created.json

    result = (
        make_app(encryption_keys=f"{K2},{K1}")
        .test_cli_runner()
        .invoke(args=["keys", "rotate-encryption"])
    )
    assert result.exit_code == 0, result.output
    assert "webhook_endpoints.secret_encrypted: 1 re-encrypted" in result.output
    new_only = make_app(encryption_keys=K2)
    with new_only.app_context():
        [endpoint] = db.session.scalars(select(WebhookEndpoint))
        assert endpoint.secret_encrypted.startswith("v1.k2.")
        assert secret_of(endpoint) == created.json["secret"]
        db.session.remove()
