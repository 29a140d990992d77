"""POST /api/v1/auth/refresh: rotation, reuse detection (the whole family dies), grace window."""

from __future__ import annotations

import uuid

import jwt
from sqlalchemy import select, update

from tests.support.accounts import STRONG_PASSWORD
from tests.support.refresh_tokens import backdate_used_refresh_tokens
from tests.support.rows import stored_row
from webapp.audit.models import AuditEvent
from webapp.auth.models import AuthSession
from webapp.auth.tokens import format_refresh_token
from webapp.extensions import db

REFRESH = "/api/v1/auth/refresh"


def slug(response) -> str:
    return response.json["type"].rsplit("/", 1)[-1]


def refresh(client, token: str):
    return client.post(REFRESH, json={"refresh_token": token})


def me(client, access_token: str):
    return client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {access_token}"})


def session_id_of(access_token: str) -> uuid.UUID:
    return uuid.UUID(jwt.decode(access_token, options={"verify_signature": False})["sid"])


def test_refresh_rotates_to_a_new_working_pair_in_the_same_session(client, member):
    response = refresh(client, member.refresh_token)

    assert response.status_code == 200
    pair = response.json
    assert pair["token_type"] == "Bearer"
    assert pair["expires_in"] == 900
    assert pair["refresh_token"] != member.refresh_token
    assert pair["access_token"] != member.access_token
    assert session_id_of(pair["access_token"]) == session_id_of(member.access_token)
    assert me(client, pair["access_token"]).status_code == 200
    assert refresh(client, pair["refresh_token"]).status_code == 200


def test_a_rotated_refresh_token_no_longer_works(client, member):
    assert refresh(client, member.refresh_token).status_code == 200

    again = refresh(client, member.refresh_token)

    assert again.status_code == 401
    assert "WWW-Authenticate" in again.headers


def test_a_reused_refresh_token_revokes_the_whole_session(client, app, member):
    newest = refresh(client, member.refresh_token).json

    reused = refresh(client, member.refresh_token)

    assert reused.status_code == 401
    assert slug(reused) == "refresh-token-reused"
    # The legitimate holder's newest tokens die with the family...
    after = refresh(client, newest["refresh_token"])
    assert after.status_code == 401
    assert slug(after) == "invalid-refresh-token"
    assert me(client, newest["access_token"]).status_code == 401
    assert me(client, member.access_token).status_code == 401
    session = stored_row(app, AuthSession, session_id_of(member.access_token))
    assert session.revoked_at is not None
    assert session.revoked_reason == "refresh_token_reuse"


def test_refresh_reuse_revokes_only_that_session(client, member):
    other = client.post(
        "/api/v1/auth/login", json={"email": member.email, "password": STRONG_PASSWORD}
    ).json
    refresh(client, member.refresh_token)

    assert refresh(client, member.refresh_token).status_code == 401

    assert me(client, other["access_token"]).status_code == 200
    assert refresh(client, other["refresh_token"]).status_code == 200


def test_refresh_reuse_is_audited(client, app, member):
    refresh(client, member.refresh_token)
    refresh(client, member.refresh_token)

    with app.app_context():
        [event] = db.session.scalars(
            select(AuditEvent).where(AuditEvent.action == "auth.refresh_reuse_detected")
        ).all()
        assert event.target_id == session_id_of(member.access_token)
        assert event.actor_id == member.id
        db.session.remove()


def test_reuse_inside_the_grace_window_gets_the_same_successor(make_app, make_user):
    app = make_app(refresh_reuse_grace=30)
    client = app.test_client()
    account = make_user(login=False)
    pair = client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": STRONG_PASSWORD}
    ).json

    first = refresh(client, pair["refresh_token"])
    second = refresh(client, pair["refresh_token"])

    assert first.status_code == second.status_code == 200
    assert second.json["refresh_token"] == first.json["refresh_token"]
    assert me(client, second.json["access_token"]).status_code == 200
    assert me(client, pair["access_token"]).status_code == 200
    assert refresh(client, first.json["refresh_token"]).status_code == 200


def test_reuse_after_the_grace_window_still_revokes_the_session(make_app, make_user):
    app = make_app(refresh_reuse_grace=30)
    client = app.test_client()
    account = make_user(login=False)
    pair = client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": STRONG_PASSWORD}
    ).json
    successor = refresh(client, pair["refresh_token"]).json
    backdate_used_refresh_tokens(app, 60)

    late = refresh(client, pair["refresh_token"])

    assert late.status_code == 401
    assert slug(late) == "refresh-token-reused"
    assert refresh(client, successor["refresh_token"]).status_code == 401


def test_without_a_grace_window_even_an_immediate_reuse_revokes(client, member):
    refresh(client, member.refresh_token)

    assert slug(refresh(client, member.refresh_token)) == "refresh-token-reused"


def test_malformed_refresh_tokens_are_refused(client, member):
    token_id, _, mac = member.refresh_token.partition(".")
    candidates = [
        "garbage",
        token_id,
        f"{token_id}.",
        f"{token_id}.{mac[:-2]}",
        f"{uuid.uuid4().hex}.{mac}",
        f"not-hex.{mac}",
        f"{token_id}.{mac}.{mac}",
    ]

    for candidate in candidates:
        response = refresh(client, candidate)
        assert response.status_code == 401, candidate
        assert slug(response) == "invalid-refresh-token"
        assert "WWW-Authenticate" in response.headers
    assert refresh(client, member.refresh_token).status_code == 200


def test_a_refresh_token_forged_without_the_secret_is_refused(client, make_app, member):
    token_id = uuid.UUID(hex=member.refresh_token.partition(".")[0])
    other_secret_app = make_app(secret_key="another-secret-" + "y" * 32)
    with other_secret_app.app_context():
        forged = format_refresh_token(token_id)

    response = refresh(client, forged)

    assert response.status_code == 401
    assert slug(response) == "invalid-refresh-token"
    # The forgery attempt neither used nor revoked the genuine token.
    assert refresh(client, member.refresh_token).status_code == 200


def test_a_refresh_token_of_an_expired_session_is_refused(client, app, member):
    with app.app_context():
        db.session.execute(
            update(AuthSession)
            .where(AuthSession.user_id == member.id)
            .values(expires_at=AuthSession.created_at)
        )
        db.session.commit()
        db.session.remove()

    response = refresh(client, member.refresh_token)

    assert response.status_code == 401
    assert slug(response) == "invalid-refresh-token"


def test_refresh_rejects_an_unknown_field_and_a_missing_token(client, member):
    extra = client.post(REFRESH, json={"refresh_token": member.refresh_token, "scope": "x"})
    missing = client.post(REFRESH, json={})

    assert extra.status_code == 422
    assert missing.status_code == 422
    assert "refresh_token" in missing.json["errors"]


def test_a_refreshed_access_token_carries_the_current_role(client, admin, member):
    client.put(f"/api/v1/users/{member.id}/role", json={"role": "admin"}, headers=admin.headers)

    pair = refresh(client, member.refresh_token).json

    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    assert claims["role"] == "admin"
