"""A user's view of their provider sessions: the session list names their client, and
DELETE /api/v1/users/me/oauth-consents/{id} takes back what the consent bought: the user's
sessions with that client end (refresh `invalid_grant`, introspection inactive, UserInfo 401),
audited, while other clients' sessions, other users' and the API's own go on."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from tests.support.accounts import Account
from tests.support.oauth import WEB_APP, register
from tests.support.oidc import (
    INTROSPECT,
    USERINFO,
    basic,
    issue_code,
    redeem,
    refresh,
    tokens_for,
    verify_jwt,
)
from tests.support.rows import audit_events
from webapp.auth.models import AuthSession
from webapp.context import SYSTEM
from webapp.extensions import db
from webapp.oauth import consents
from webapp.oauth.models import OAuthClient

CONSENTS = "/api/v1/users/me/oauth-consents/"


def consent_to(app: Flask, body: dict[str, Any], account: Account) -> str:
    """The consent the consent page's Allow records; its id."""
    with app.app_context():
        client = db.session.get(OAuthClient, uuid.UUID(body["id"]))
        assert client is not None
        consent = consents.grant(
            db.session, SYSTEM, account.id, client, ["openid", "profile", "email"]
        )
        db.session.commit()
        consent_id = str(consent.id)
        db.session.remove()
    return consent_id


def active(client: FlaskClient, owner: dict[str, Any], token: str) -> bool:
    answer = client.post(
        INTROSPECT, data={"token": token}, headers=basic(owner["client_id"], owner["client_secret"])
    )
    assert answer.status_code == 200
    return bool(answer.json["active"])


def userinfo_status(client: FlaskClient, tokens: dict[str, Any]) -> int:
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    return int(client.get(USERINFO, headers=bearer).status_code)


def test_revoking_a_consent_ends_the_users_sessions_with_that_client(
    app, client, admin, web_app, member, make_user
):
    other_app = register(client, admin, **{**WEB_APP, "client_name": "Tracker"})
    consent_id = consent_to(app, web_app, member)
    consent_to(app, other_app, member)
    first = tokens_for(app, client, web_app, member)
    second = tokens_for(app, client, web_app, member)
    elsewhere = tokens_for(app, client, other_app, member)
    stranger = make_user()
    consent_to(app, web_app, stranger)
    theirs = tokens_for(app, client, web_app, stranger)
    assert active(client, web_app, first["access_token"]) is True

    gone = client.delete(f"{CONSENTS}{consent_id}", headers=member.headers)

    assert gone.status_code == 204
    for tokens in (first, second):
        assert active(client, web_app, tokens["access_token"]) is False
        assert active(client, web_app, tokens["refresh_token"]) is False
        assert userinfo_status(client, tokens) == 401
        refused = refresh(client, web_app, tokens["refresh_token"])
        assert refused.status_code == 400
        assert refused.json["error"] == "invalid_grant"
    # Another client of the same user, the same client of another user, the API's own session.
    assert userinfo_status(client, elsewhere) == 200
    assert refresh(client, other_app, elsewhere["refresh_token"]).status_code == 200
    assert refresh(client, web_app, theirs["refresh_token"]).status_code == 200
    assert client.get("/api/v1/users/me", headers=member.headers).status_code == 200

    (event,) = audit_events(app, "oauth_consent.revoked")
    assert event.actor_id == member.id
    assert event.details["sessions_revoked"] == 2
    ended = [e for e in audit_events(app, "session.revoked") if e.actor_id == member.id]
    assert {e.details["reason"] for e in ended} == {"consent_revoked"}
    with app.app_context():
        reasons = db.session.scalars(
            select(AuthSession.revoked_reason).where(
                AuthSession.user_id == member.id, AuthSession.revoked_at.is_not(None)
            )
        ).all()
        db.session.remove()
    assert sorted(reasons) == ["consent_revoked", "consent_revoked"]
    assert {str(e.target_id) for e in ended} == {
        session_of(client, web_app, first),
        session_of(client, web_app, second),
    }


def session_of(client: FlaskClient, owner: dict[str, Any], tokens: dict[str, Any]) -> str:
    """The session (`sid`) an access token belongs to."""
    claims = verify_jwt(client, tokens["access_token"], audience="gatehouse", typ="at+jwt")
    return str(claims["sid"])


def test_a_code_not_yet_redeemed_dies_with_the_consent(app, client, web_app, member):
    consent_id = consent_to(app, web_app, member)
    pending = issue_code(app, web_app, member.id)

    assert client.delete(f"{CONSENTS}{consent_id}", headers=member.headers).status_code == 204

    refused = redeem(client, web_app, pending)
    assert refused.status_code == 400
    assert refused.json["error"] == "invalid_grant"
    assert audit_events(app, "oauth.token_issued") == []


def test_the_session_list_names_the_client_of_a_provider_session(app, client, web_app, member):
    provider = tokens_for(app, client, web_app, member)

    listed = client.get("/api/v1/auth/sessions", headers=member.headers)

    assert listed.status_code == 200
    by_id = {item["id"]: item for item in listed.json["items"]}
    theirs = by_id.pop(session_of(client, web_app, provider))
    assert theirs["client_id"] == web_app["client_id"]
    assert theirs["client_name"] == "Wiki"
    assert theirs["current"] is False
    (api,) = by_id.values()
    assert api["current"] is True
    assert api["client_id"] is None
    assert api["client_name"] is None

    ended = client.delete(f"/api/v1/auth/sessions/{theirs['id']}", headers=member.headers)
    assert ended.status_code == 204
    assert refresh(client, web_app, provider["refresh_token"]).json["error"] == "invalid_grant"
