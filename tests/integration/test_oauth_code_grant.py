"""POST /oauth/token with `authorization_code` on the real PostgreSQL: codes issued as the
authorize endpoint issues them, redeemed by confidential and public clients with PKCE; the ID
and access tokens verified by joserfc against the published JWKS; every refusal, and a reused
code revoking what its first redemption issued."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.support.oauth import MACHINE, WEB_APP, register
from tests.support.oidc import (
    CALLBACK,
    INTROSPECT,
    TOKEN,
    USERINFO,
    at_hash,
    basic,
    grants_counted,
    issue_code,
    redeem,
    refresh,
    verify_jwt,
)
from tests.support.rows import audit_events
from webapp.auth.models import AuthSession
from webapp.db import utcnow
from webapp.extensions import db
from webapp.oauth.models import OAuthAuthorizationCode
from webapp.users.models import User


def assert_oauth_error(response: Any, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = response.json
    assert body["error"] == error, body
    return body


def introspect(client, web_app: dict[str, Any], token: str) -> dict[str, Any]:
    answer = client.post(
        INTROSPECT,
        data={"token": token},
        headers=basic(web_app["client_id"], web_app["client_secret"]),
    )
    assert answer.status_code == 200, answer.json
    return dict(answer.json)


def test_a_confidential_client_gets_verified_id_access_and_refresh_tokens(
    app, client, web_app, member
):
    auth_time = utcnow().replace(microsecond=0) - timedelta(minutes=2)
    code = issue_code(app, web_app, member.id, auth_time=auth_time, amr=["pwd", "otp", "mfa"])
    before = grants_counted(client, grant="authorization_code", result="success")

    response = redeem(client, web_app, code)

    assert response.status_code == 200, response.json
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["scope"] == "openid profile email"
    assert body["refresh_token"]

    id_claims = verify_jwt(client, body["id_token"], audience=web_app["client_id"], typ="JWT")
    assert id_claims["sub"] == str(member.id)
    assert id_claims["azp"] == web_app["client_id"]
    assert id_claims["nonce"] == "n-0S6_WzA2Mj"
    assert id_claims["auth_time"] == int(auth_time.timestamp())
    assert id_claims["amr"] == ["pwd", "otp", "mfa"]
    assert id_claims["at_hash"] == at_hash(body["access_token"])
    # Profile and email claims are UserInfo's, not the ID token's.
    assert not {"email", "name", "email_verified"} & set(id_claims)

    access = verify_jwt(client, body["access_token"], audience="gatehouse", typ="at+jwt")
    assert access["sub"] == str(member.id)
    assert access["client_id"] == web_app["client_id"]
    assert access["scope"] == "openid profile email"
    assert access["jti"]
    assert access["exp"] - access["iat"] == 900
    with app.app_context():
        session = db.session.get(AuthSession, uuid.UUID(access["sid"]))
        assert session is not None
        assert session.user_id == member.id
        assert str(session.client_pk) == web_app["id"]
        db.session.remove()

    (event,) = audit_events(app, "oauth.token_issued")
    assert event.actor_id == member.id
    assert event.target_id == uuid.UUID(access["sid"])
    assert event.details["grant"] == "authorization_code"
    assert event.details["client_id"] == web_app["client_id"]
    assert "access_token" not in str(event.details)
    assert grants_counted(client, grant="authorization_code", result="success") == before + 1


def test_gatehouse_own_api_refuses_the_users_provider_access_token(app, client, web_app, member):
    code = issue_code(app, web_app, member.id)
    access = redeem(client, web_app, code).json["access_token"]

    answer = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {access}"})

    assert answer.status_code == 401


def test_a_public_client_redeems_with_its_client_id_and_pkce_alone(app, client, public_app, member):
    code = issue_code(app, public_app, member.id)

    response = redeem(client, public_app, code)

    assert response.status_code == 200, response.json
    assert public_app["client_secret"] is None
    assert response.json["refresh_token"]
    claims = verify_jwt(
        client, response.json["id_token"], audience=public_app["client_id"], typ="JWT"
    )
    assert claims["sub"] == str(member.id)


def test_a_client_secret_post_client_must_use_its_registered_method(app, client, admin, member):
    posting = register(
        client, admin, **{**WEB_APP, "token_endpoint_auth_method": "client_secret_post"}
    )
    code = issue_code(app, posting, member.id)

    as_basic = client.post(
        TOKEN,
        data={
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": "x" * 43,
            "redirect_uri": CALLBACK,
        },
        headers=basic(posting["client_id"], posting["client_secret"]),
    )
    assert_oauth_error(as_basic, 401, "invalid_client")

    # The refusal came before the code was looked at: it still works the registered way.
    assert redeem(client, posting, code).status_code == 200


def test_without_openid_there_is_no_id_token_and_without_a_nonce_none_is_echoed(
    app, client, web_app, member
):
    no_openid = redeem(client, web_app, issue_code(app, web_app, member.id, scope="email"))
    assert no_openid.status_code == 200
    assert "id_token" not in no_openid.json
    assert no_openid.json["scope"] == "email"

    no_nonce = redeem(client, web_app, issue_code(app, web_app, member.id, nonce=None))
    claims = verify_jwt(client, no_nonce.json["id_token"], audience=web_app["client_id"], typ="JWT")
    assert "nonce" not in claims


def test_a_client_without_the_refresh_token_grant_gets_no_refresh_token(app, client, admin, member):
    code_only = register(client, admin, **{**WEB_APP, "grant_types": ["authorization_code"]})

    response = redeem(client, code_only, issue_code(app, code_only, member.id))

    assert response.status_code == 200
    assert "refresh_token" not in response.json
    assert response.json["id_token"]


@pytest.mark.parametrize(
    "verifier",
    [None, "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXX", "short", "dBjftJeZ4CVP" * 12],
    ids=["missing", "mismatch", "too-short", "too-long"],
)
def test_a_missing_or_wrong_pkce_verifier_is_invalid_grant_and_burns_the_code(
    app, client, web_app, member, verifier
):
    code = issue_code(app, web_app, member.id)

    body = assert_oauth_error(
        redeem(client, web_app, code, verifier=verifier), 400, "invalid_grant"
    )

    assert "PKCE" in body["error_description"]
    assert_oauth_error(redeem(client, web_app, code), 400, "invalid_grant")


@pytest.mark.parametrize(
    "redirect_uri", [None, "https://wiki.example.com/oauth/callback/", "https://evil.example/cb"]
)
def test_a_redirect_uri_other_than_the_codes_is_invalid_grant(
    app, client, web_app, member, redirect_uri
):
    code = issue_code(app, web_app, member.id)

    response = redeem(client, web_app, code, redirect_uri=redirect_uri)

    assert_oauth_error(response, 400, "invalid_grant")
    assert_oauth_error(redeem(client, web_app, code), 400, "invalid_grant")  # burnt


def test_expired_unknown_and_other_clients_codes_are_invalid_grant(
    app, client, admin, web_app, member
):
    expired = issue_code(app, web_app, member.id)
    with app.app_context():
        db.session.execute(
            update(OAuthAuthorizationCode).values(expires_at=utcnow() - timedelta(seconds=1))
        )
        db.session.commit()
        db.session.remove()
    other = register(client, admin, **WEB_APP)
    theirs = issue_code(app, other, member.id)

    assert_oauth_error(redeem(client, web_app, expired), 400, "invalid_grant")
    assert_oauth_error(redeem(client, web_app, "no-such-code"), 400, "invalid_grant")
    assert_oauth_error(redeem(client, web_app, theirs), 400, "invalid_grant")
    # Presented by the wrong client, the code is spent for its own client too.
    assert_oauth_error(redeem(client, other, theirs), 400, "invalid_grant")


def test_a_deactivated_users_code_is_invalid_grant(app, client, web_app, member):
    code = issue_code(app, web_app, member.id)
    with app.app_context():
        db.session.execute(update(User).where(User.id == member.id).values(active=False))
        db.session.commit()
        db.session.remove()

    assert_oauth_error(redeem(client, web_app, code), 400, "invalid_grant")


def test_a_reused_code_is_invalid_grant_and_revokes_every_token_of_its_first_redemption(
    app, client, web_app, member
):
    code = issue_code(app, web_app, member.id)
    first = redeem(client, web_app, code).json
    assert introspect(client, web_app, first["access_token"])["active"] is True
    before = grants_counted(client, grant="authorization_code", result="code_reused")

    again = redeem(client, web_app, code)

    assert_oauth_error(again, 400, "invalid_grant")
    assert grants_counted(client, grant="authorization_code", result="code_reused") == before + 1
    # The first redemption's session is over: its refresh token, access token and UserInfo.
    assert_oauth_error(refresh(client, web_app, first["refresh_token"]), 400, "invalid_grant")
    assert introspect(client, web_app, first["access_token"]) == {"active": False}
    assert introspect(client, web_app, first["refresh_token"]) == {"active": False}
    bearer = {"Authorization": f"Bearer {first['access_token']}"}
    assert client.get(USERINFO, headers=bearer).status_code == 401
    (event,) = audit_events(app, "oauth.code_reused")
    assert event.actor_id == member.id
    assert event.details["presented_by"] == web_app["client_id"]
    with app.app_context():
        session = db.session.scalar(select(AuthSession).where(AuthSession.id == event.target_id))
        assert session is not None
        assert session.revoked_reason == "authorization_code_reuse"
        db.session.remove()


def test_the_other_refusals_of_the_token_endpoint(app, client, admin, web_app, member):
    code = issue_code(app, web_app, member.id)
    bad_secret = basic(web_app["client_id"], "not-the-secret")
    grant = {"grant_type": "authorization_code", "redirect_uri": CALLBACK}

    assert_oauth_error(
        client.post(
            TOKEN, data=grant, headers=basic(web_app["client_id"], web_app["client_secret"])
        ),
        400,
        "invalid_request",
    )  # no code
    assert_oauth_error(client.post(TOKEN, data={**grant, "code": code}), 401, "invalid_client")
    assert_oauth_error(
        client.post(TOKEN, data={**grant, "code": code}, headers=bad_secret), 401, "invalid_client"
    )
    # A confidential client cannot pass for a public one by leaving its secret out.
    assert_oauth_error(
        client.post(TOKEN, data={**grant, "code": code, "client_id": web_app["client_id"]}),
        401,
        "invalid_client",
    )
    machine = register(client, admin, **MACHINE)
    assert_oauth_error(
        client.post(
            TOKEN,
            data={
                **grant,
                "code": code,
                "client_id": machine["client_id"],
                "client_secret": machine["client_secret"],
            },
        ),
        400,
        "unauthorized_client",
    )
    assert_oauth_error(
        client.post(TOKEN, data={"grant_type": "urn:example:none", "code": code}),
        400,
        "unsupported_grant_type",
    )
    # None of these spent the code.
    assert redeem(client, web_app, code).status_code == 200
