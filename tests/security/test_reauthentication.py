"""Sensitive changes need more than an access token.

The attack: with a stolen access token (or refresh token), mint or rotate an API key that
survives the owner's password reset, or enrol one's own TOTP and lock the owner out. Those
operations need a recent authentication of the session (`sessions.auth_time` within
`REAUTH_MAX_AGE`), renewed by `POST /auth/reauthenticate`; a password reset revokes every
session and API key.

OWASP ASVS 4.0.3: 3.7.1 (re-authentication before sensitive transactions), 2.5.7 / 3.3.3
(credential recovery and change end the other sessions and credentials), 2.8.x (TOTP changes
need proof), 6.4.x (API key lifecycle). Runs against the real PostgreSQL and Redis.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
from flask import Flask
from sqlalchemy import func, select

from tests.support.accounts import STRONG_PASSWORD, Account, age_sessions
from webapp.apikeys.models import ApiKey
from webapp.audit.models import AuditEvent
from webapp.auth.models import AuthSession, OneTimeToken
from webapp.auth.tokens import decode_access_token
from webapp.config import ConfigError, Settings
from webapp.db import utcnow
from webapp.extensions import db
from webapp.mfa.models import TotpFactor

KEYS = "/api/v1/api-keys/"
MFA = "/api/v1/auth/mfa"
REAUTH = "/api/v1/auth/reauthenticate"
NEW_PASSWORD = "quiet-Harbour-41-meadow"


def slug(response: Any) -> str:
    return str(response.json["type"]).rsplit("/", 1)[-1]


def count(app: Flask, model: Any, user_id: uuid.UUID) -> int:
    with app.app_context():
        column = model.user_id
        total = db.session.scalar(select(func.count()).select_from(model).where(column == user_id))
        db.session.remove()
        return int(total or 0)


def new_key(client: Any, account: Account, scopes: list[str] | None = None) -> dict[str, Any]:
    response = client.post(
        KEYS, json={"name": "bot", "scopes": scopes or ["users:read"]}, headers=account.headers
    )
    assert response.status_code == 201, response.json
    return dict(response.json)


def code_now(secret: str) -> str:
    return pyotp.TOTP(secret).at(datetime.now(UTC))


def enable_totp(app: Flask, client: Any, account: Account) -> tuple[str, list[str]]:
    secret = client.post(f"{MFA}/totp", headers=account.headers).json["secret"]
    confirmed = client.post(
        f"{MFA}/totp/confirm", json={"code": code_now(secret)}, headers=account.headers
    )
    assert confirmed.status_code == 200, confirmed.json
    # As if the next time step had begun, so that the current code is new again.
    with app.app_context():
        factor = db.session.get(TotpFactor, account.id)
        factor.last_used_step = pyotp.TOTP(secret).timecode(datetime.now(UTC)) - 2
        db.session.commit()
        db.session.remove()
    return secret, list(confirmed.json["recovery_codes"])


# The sensitive operations: (method, path or a builder of it, body), each run on a stale session.
def _sensitive_requests(client: Any, app: Flask, account: Account) -> list[tuple[str, str, Any]]:
    key_id = new_key(client, account)["id"]
    client.post(f"{MFA}/totp", headers=account.headers)  # a pending enrolment to confirm/delete
    return [
        ("POST", KEYS, {"name": "stolen", "scopes": ["users:read"]}),
        ("POST", f"{KEYS}{key_id}/rotate", None),
        ("POST", f"{MFA}/totp", None),
        ("POST", f"{MFA}/totp/confirm", {"code": "123456"}),
        ("DELETE", f"{MFA}/totp", {"password": STRONG_PASSWORD}),
        ("POST", f"{MFA}/recovery-codes", None),
        ("POST", "/api/v1/users/me/email", {"email": "thief@example.com"}),
    ]


SENSITIVE = [
    ("POST", KEYS),
    ("POST", KEYS + "<uuid:key_id>/rotate"),
    ("POST", MFA + "/totp"),
    ("POST", MFA + "/totp/confirm"),
    ("DELETE", MFA + "/totp"),
    ("POST", MFA + "/recovery-codes"),
    ("POST", "/api/v1/users/me/email"),
    # An administrator minting an OAuth client secret (tests/integration/test_oauth_clients.py).
    ("POST", "/api/v1/oauth/clients/"),
    ("POST", "/api/v1/oauth/clients/<uuid:client_pk>/rotate-secret"),
    # A webhook subscription (it receives every user's changes) and a new signing secret.
    ("POST", "/api/v1/webhooks/"),
    ("POST", "/api/v1/webhooks/<uuid:endpoint_id>/rotate-secret"),
]


def test_every_sensitive_operation_refuses_a_session_without_a_recent_password_check(
    app, client, member
):
    requests = _sensitive_requests(client, app, member)
    age_sessions(app, member.id)
    with app.app_context():
        before = db.session.get(TotpFactor, member.id).secret_encrypted
        db.session.remove()

    for method, path, body in requests:
        response = client.open(path, method=method, json=body, headers=member.headers)
        assert response.status_code == 403, (method, path, response.json)
        assert slug(response) == "reauthentication-required", (method, path)
        assert response.json["reauthenticate"] == REAUTH
        assert response.json["max_age"] == 300

    assert count(app, ApiKey, member.id) == 1  # the fresh one only
    with app.app_context():
        assert not db.session.scalars(
            select(OneTimeToken).where(OneTimeToken.new_email == "thief@example.com")
        ).all()
        db.session.remove()
    with app.app_context():
        key = db.session.scalar(select(ApiKey).where(ApiKey.user_id == member.id))
        factor = db.session.get(TotpFactor, member.id)
        assert key.rotated_at is None
        assert factor is not None
        assert factor.secret_encrypted == before
        db.session.remove()


def test_the_route_table_marks_exactly_the_sensitive_operations(app):
    marked = set()
    for rule in app.url_map.iter_rules():
        view_class = getattr(app.view_functions[rule.endpoint], "view_class", None)
        for method in rule.methods or ():
            handler = getattr(view_class, method.lower(), None) if view_class else None
            if getattr(handler, "requires_recent_auth", False):
                marked.add((method, rule.rule))
    assert marked == set(SENSITIVE)


def test_the_openapi_document_says_which_operations_need_a_recent_authentication(client):
    document = client.get("/api/openapi.json").json
    marked = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and operation.get("x-requires-recent-auth")
    }
    assert marked == {(m, re.sub(r"<uuid:(\w+)>", r"{\1}", p)) for m, p in SENSITIVE}
    create = document["paths"][KEYS]["post"]
    assert "reauthentication-required" in create["description"]


def test_a_stolen_access_token_can_neither_mint_a_key_nor_enrol_totp(app, client, member):
    """The attack: the owner signed in a quarter of an hour ago, the attacker
    replays the access token (or refreshes with the stolen refresh token)."""
    age_sessions(app, member.id)
    stolen = {"Authorization": f"Bearer {member.access_token}"}
    refreshed = client.post("/api/v1/auth/refresh", json={"refresh_token": member.refresh_token})
    assert refreshed.status_code == 200
    renewed = {"Authorization": f"Bearer {refreshed.json['access_token']}"}

    for headers in (stolen, renewed):
        minted = client.post(KEYS, json={"name": "x", "scopes": ["users:read"]}, headers=headers)
        enrolled = client.post(f"{MFA}/totp", headers=headers)
        assert (minted.status_code, enrolled.status_code) == (403, 403)
        assert slug(minted) == slug(enrolled) == "reauthentication-required"
        # Guessing the password through reauthenticate costs lockout strikes.
        wrong = client.post(REAUTH, json={"password": "not-the-Password-1"}, headers=headers)
        assert wrong.status_code == 401
        assert slug(wrong) == "invalid-credentials"

    assert count(app, ApiKey, member.id) == 0
    assert count(app, TotpFactor, member.id) == 0
    with app.app_context():
        failures = db.session.scalars(
            select(AuditEvent.details).where(
                AuditEvent.action == "auth.login_failed", AuditEvent.target_id == member.id
            )
        ).all()
        assert [d["reason"] for d in failures] == ["reauth_invalid_password"] * 2
        db.session.remove()


def test_reauthenticate_renews_the_current_session_for_its_own_tokens(app, client, member):
    age_sessions(app, member.id)
    assert client.post(f"{MFA}/totp", headers=member.headers).status_code == 403

    response = client.post(REAUTH, json={"password": STRONG_PASSWORD}, headers=member.headers)

    assert response.status_code == 200, response.json
    auth_time = datetime.fromisoformat(response.json["auth_time"])
    assert abs((auth_time - utcnow()).total_seconds()) < 5
    expires = datetime.fromisoformat(response.json["expires_at"])
    assert expires - auth_time == timedelta(seconds=300)
    assert response.json["max_age"] == 300
    # The same access token now passes: the check reads the session row.
    assert client.post(f"{MFA}/totp", headers=member.headers).status_code == 201
    assert client.post(KEYS, json={"name": "y", "scopes": ["users:read"]}, headers=member.headers)
    assert count(app, ApiKey, member.id) == 1


def test_reauthenticate_renews_only_the_session_that_proved_it(app, client, member):
    other = client.post(
        "/api/v1/auth/login", json={"email": member.email, "password": STRONG_PASSWORD}
    ).json
    other_headers = {"Authorization": f"Bearer {other['access_token']}"}
    age_sessions(app, member.id)

    assert client.post(REAUTH, json={"password": STRONG_PASSWORD}, headers=other_headers)

    assert client.post(f"{MFA}/totp", headers=other_headers).status_code == 201
    blocked = client.post(
        KEYS, json={"name": "z", "scopes": ["users:read"]}, headers=member.headers
    )
    assert blocked.status_code == 403


def test_a_recent_authentication_expires_after_reauth_max_age(app, client, member):
    age_sessions(app, member.id, seconds=299)
    assert client.post(f"{MFA}/totp", headers=member.headers).status_code == 201
    age_sessions(app, member.id, seconds=301)
    assert client.post(f"{MFA}/totp", headers=member.headers).status_code == 403


def test_reauth_max_age_is_a_setting(make_app, member):
    strict = make_app(reauth_max_age=60)
    client = strict.test_client()
    age_sessions(strict, member.id, seconds=90)

    response = client.post(f"{MFA}/totp", headers=member.headers)

    assert response.status_code == 403
    assert response.json["max_age"] == 60


def test_reauth_max_age_must_be_positive(monkeypatch):
    assert Settings().reauth_max_age == 300
    monkeypatch.setenv("REAUTH_MAX_AGE", "120")
    assert Settings.from_env().reauth_max_age == 120
    with pytest.raises(ConfigError, match="REAUTH_MAX_AGE"):
        Settings().with_overrides(reauth_max_age=0)


def session_auth_time(app: Flask, user_id: uuid.UUID) -> datetime:
    with app.app_context():
        value = db.session.scalar(
            select(AuthSession.auth_time).where(AuthSession.user_id == user_id)
        )
        db.session.remove()
    assert value is not None
    return value


def test_access_tokens_carry_the_sessions_auth_time_and_refresh_keeps_it(app, client, member):
    with app.app_context():
        first = decode_access_token(member.access_token)
    assert first["auth_time"] == int(session_auth_time(app, member.id).timestamp())
    age_sessions(app, member.id, seconds=600)
    aged = int(session_auth_time(app, member.id).timestamp())

    refreshed = client.post("/api/v1/auth/refresh", json={"refresh_token": member.refresh_token})
    again = client.post(
        "/api/v1/auth/refresh", json={"refresh_token": refreshed.json["refresh_token"]}
    )

    with app.app_context():
        second = decode_access_token(refreshed.json["access_token"])
        third = decode_access_token(again.json["access_token"])
    assert second["auth_time"] == third["auth_time"] == aged
    assert second["iat"] - second["auth_time"] >= 599
    headers = {"Authorization": f"Bearer {again.json['access_token']}"}
    assert client.post(f"{MFA}/totp", headers=headers).status_code == 403


def test_an_api_key_can_neither_reauthenticate_nor_make_sensitive_changes(app, client, member):
    key = new_key(client, member)["key"]
    for method, path, body in [
        ("POST", REAUTH, {"password": STRONG_PASSWORD}),
        ("POST", KEYS, {"name": "k", "scopes": ["users:read"]}),
        ("POST", f"{MFA}/recovery-codes", None),
    ]:
        response = client.open(path, method=method, json=body, headers={"X-API-Key": key})
        assert response.status_code == 403, path
        assert slug(response) == "api-key-not-allowed"


# --- reauthentication itself ---------------------------------------------------------------


def test_wrong_passwords_at_reauthenticate_count_towards_the_lockout(make_app, member):
    locking = make_app(lockout_threshold=2)
    client = locking.test_client()
    wrong = {"password": "not-the-Password-1"}
    statuses = [client.post(REAUTH, json=wrong, headers=member.headers).status_code for _ in "ab"]
    right = client.post(REAUTH, json={"password": STRONG_PASSWORD}, headers=member.headers)

    assert statuses == [401, 401]
    assert right.status_code == 429
    assert slug(right) == "account-locked"


def test_reauthenticate_is_audited(app, client, member):
    from tests.support.rows import audit_events

    client.post(REAUTH, json={"password": STRONG_PASSWORD}, headers=member.headers)
    client.post(REAUTH, json={"password": "not-the-Password-1"}, headers=member.headers)

    [ok] = audit_events(app, "auth.reauthenticated")
    assert ok.details["method"] == "password"
    failures = audit_events(app, "auth.login_failed")
    assert [e.details["reason"] for e in failures] == ["reauth_invalid_password"]


def test_with_totp_on_reauthenticate_needs_a_current_code(app, client, member):
    secret, _ = enable_totp(app, client, member)
    age_sessions(app, member.id)

    missing = client.post(REAUTH, json={"password": STRONG_PASSWORD}, headers=member.headers)
    wrong_code = "000000" if code_now(secret) != "000000" else "111111"
    bad = client.post(
        REAUTH, json={"password": STRONG_PASSWORD, "code": wrong_code}, headers=member.headers
    )
    good = client.post(
        REAUTH, json={"password": STRONG_PASSWORD, "code": code_now(secret)}, headers=member.headers
    )
    replay = client.post(
        REAUTH, json={"password": STRONG_PASSWORD, "code": code_now(secret)}, headers=member.headers
    )

    assert missing.status_code == 422
    assert "code" in missing.json["errors"]
    assert (bad.status_code, slug(bad)) == (401, "invalid-mfa-code")
    assert good.status_code == 200, good.json
    assert (replay.status_code, slug(replay)) == (401, "invalid-mfa-code")
    assert client.post(f"{MFA}/recovery-codes", headers=member.headers).status_code == 200


def test_with_totp_on_a_recovery_code_reauthenticates_once(app, client, member):
    _, codes = enable_totp(app, client, member)
    age_sessions(app, member.id)
    body = {"password": STRONG_PASSWORD, "recovery_code": codes[0]}

    first = client.post(REAUTH, json=body, headers=member.headers)
    again = client.post(REAUTH, json=body, headers=member.headers)

    assert first.status_code == 200
    assert again.status_code == 401
    status = client.get(MFA, headers=member.headers).json
    assert status["recovery_codes_remaining"] == 9


def test_a_password_is_checked_before_the_code_is_spent(app, client, member):
    secret, _ = enable_totp(app, client, member)
    code = code_now(secret)

    wrong = client.post(
        REAUTH, json={"password": "not-the-Password-1", "code": code}, headers=member.headers
    )
    right = client.post(
        REAUTH, json={"password": STRONG_PASSWORD, "code": code}, headers=member.headers
    )

    assert wrong.status_code == 401
    assert right.status_code == 200


def test_mfa_login_sets_a_fresh_auth_time(app, client, member):
    secret, _ = enable_totp(app, client, member)
    age_sessions(app, member.id)
    step = client.post(
        "/api/v1/auth/login", json={"email": member.email, "password": STRONG_PASSWORD}
    ).json
    tokens = client.post(
        "/api/v1/auth/login/mfa", json={"mfa_token": step["mfa_token"], "code": code_now(secret)}
    ).json

    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert client.post(f"{MFA}/recovery-codes", headers=headers).status_code == 200
    assert client.post(f"{MFA}/recovery-codes", headers=member.headers).status_code == 403


# --- recovery codes ------------------------------------------------------------------------


def test_regenerated_recovery_codes_replace_the_old_ones(app, client, member):
    _secret, old = enable_totp(app, client, member)

    response = client.post(f"{MFA}/recovery-codes", headers=member.headers)

    assert response.status_code == 200
    fresh = response.json["recovery_codes"]
    assert len(fresh) == 10
    assert not set(fresh) & set(old)
    step = client.post(
        "/api/v1/auth/login", json={"email": member.email, "password": STRONG_PASSWORD}
    ).json
    stale = client.post(
        "/api/v1/auth/login/mfa", json={"mfa_token": step["mfa_token"], "recovery_code": old[0]}
    )
    current = client.post(
        "/api/v1/auth/login/mfa", json={"mfa_token": step["mfa_token"], "recovery_code": fresh[0]}
    )
    assert stale.status_code == 401
    assert current.status_code == 200


def test_recovery_codes_need_totp_on(client, member):
    response = client.post(f"{MFA}/recovery-codes", headers=member.headers)
    assert response.status_code == 404
    assert slug(response) == "mfa-not-enabled"


# --- recovery ends the attacker's footholds ------------------------------------------------


def _reset(client: Any, outbox: Callable[..., Any], account: Account) -> Any:
    client.post("/api/v1/auth/password-reset", json={"email": account.email})
    [message] = outbox("password_reset", recipient=account.email)
    token = parse_qs(urlsplit(message.payload["link"]).query)["token"][0]
    return client.post(
        "/api/v1/auth/password-reset/confirm", json={"token": token, "password": NEW_PASSWORD}
    )


def test_a_password_reset_revokes_every_api_key_and_session(app, client, outbox, member):
    """An attacker minted a key while holding the session; the owner's reset must end it."""
    planted = new_key(client, member)["key"]
    second = new_key(client, member, ["users:read"])["key"]
    reader = {"X-API-Key": planted}
    assert client.get(f"/api/v1/users/{member.id}", headers=reader).status_code == 200

    response = _reset(client, outbox, member)

    assert response.status_code == 200
    assert response.json == {"sessions_revoked": 1, "api_keys_revoked": 2}
    for key in (planted, second):
        denied = client.get(f"/api/v1/users/{member.id}", headers={"X-API-Key": key})
        assert denied.status_code == 401
        assert slug(denied) == "invalid-api-key"
    assert client.get("/api/v1/users/me", headers=member.headers).status_code == 401
    with app.app_context():
        statuses = set(
            db.session.scalars(select(ApiKey.revoked_at).where(ApiKey.user_id == member.id))
        )
        db.session.remove()
    assert None not in statuses


def test_a_password_change_revokes_keys_only_when_asked(app, client, make_user):
    account = make_user()
    kept = new_key(client, account)["key"]
    other = client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": STRONG_PASSWORD}
    ).json
    changed = client.post(
        "/api/v1/auth/password",
        json={"current_password": STRONG_PASSWORD, "new_password": NEW_PASSWORD},
        headers=account.headers,
    )
    assert changed.status_code == 204
    reader = {"X-API-Key": kept}
    assert client.get(f"/api/v1/users/{account.id}", headers=reader).status_code == 200
    other_headers = {"Authorization": f"Bearer {other['access_token']}"}
    assert client.get("/api/v1/users/me", headers=other_headers).status_code == 401

    again = client.post(
        "/api/v1/auth/password",
        json={
            "current_password": NEW_PASSWORD,
            "new_password": "amber-Falcon-58-river",
            "revoke_api_keys": True,
        },
        headers=account.headers,
    )

    assert again.status_code == 204
    assert client.get(f"/api/v1/users/{account.id}", headers=reader).status_code == 401
    assert client.get("/api/v1/users/me", headers=account.headers).status_code == 200
