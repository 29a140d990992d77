"""TOTP in the tests: the code of a secret at a time step, and an account with TOTP enabled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyotp
from flask.testing import FlaskClient

from tests.support.accounts import Account

MFA = "/api/v1/auth/mfa"


def code_at(secret: str, offset_steps: int = 0) -> str:
    """The code of `secret` now, or `offset_steps` time steps (of 30 s) from now."""
    totp = pyotp.TOTP(secret)
    return str(totp.at(datetime.now(UTC) + timedelta(seconds=30 * offset_steps)))


def enrol(client: FlaskClient, account: Account) -> str:
    response = client.post(f"{MFA}/totp", headers=account.headers)
    assert response.status_code == 201, response.get_json()
    return str(response.json["secret"])


def enable(client: FlaskClient, account: Account) -> tuple[str, list[str]]:
    """Enrol and confirm with the current code; returns the secret and the recovery codes."""
    secret = enrol(client, account)
    response = client.post(
        f"{MFA}/totp/confirm", json={"code": code_at(secret)}, headers=account.headers
    )
    assert response.status_code == 200, response.get_json()
    return secret, list(response.json["recovery_codes"])
