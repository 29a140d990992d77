"""POST /oauth/token with `client_credentials` on the real PostgreSQL: the client authenticated
by the method it registered, the access token verified with an independent JWT library against
the published JWKS, and every OAuth error the endpoint can answer."""

from __future__ import annotations

import base64
import logging
import uuid
from datetime import timedelta
from typing import Any

import jwt
import pytest
from sqlalchemy import update

from tests.support.oauth import CLIENTS, MACHINE, WEB_APP, register
from webapp.db import utcnow
from webapp.extensions import db
from webapp.oauth.models import OAuthClient

TOKEN = "/oauth/token"
GRANT = {"grant_type": "client_credentials"}


def basic(client_id: str, secret: str) -> dict[str, str]:
    pair = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


@pytest.fixture
def machine(client, admin) -> dict[str, Any]:
    """A client_secret_basic machine client with scope `profile email`."""
    return register(
        client,
        admin,
        **{**MACHINE, "token_endpoint_auth_method": "client_secret_basic"},
        scope="profile email",
    )


def verify(client, token: str) -> dict[str, Any]:
    """Claims of `token`, checked with PyJWT against the published JWKS (as a resource server
    would: the key chosen by `kid`, the algorithm fixed by the key)."""
    header = jwt.get_unverified_header(token)
    keys = {k["kid"]: k for k in client.get("/.well-known/jwks.json").json["keys"]}
    jwk = jwt.PyJWK(keys[header["kid"]])
    assert header["typ"] == "at+jwt"
    claims: dict[str, Any] = jwt.decode(
        token,
        jwk.key,
        algorithms=[keys[header["kid"]]["alg"]],
        audience="gatehouse",
        issuer="https://gatehouse.test",
    )
    return claims


def assert_oauth_error(response: Any, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = response.json
    assert body["error"] == error
    return body


def test_a_confidential_client_gets_a_signed_access_token_with_client_id_and_scope(client, machine):
    response = client.post(
        TOKEN, data=GRANT, headers=basic(machine["client_id"], machine["client_secret"])
    )

    assert response.status_code == 200, response.json
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["scope"] == "profile email"  # none requested: the registered scope
    assert "refresh_token" not in body  # RFC 6749 §4.4.3
    claims = verify(client, body["access_token"])
    assert claims["client_id"] == claims["sub"] == machine["client_id"]
    assert claims["scope"] == "profile email"
    assert claims["exp"] - claims["iat"] == 900
    assert claims["jti"]
    signing = client.get("/.well-known/jwks.json").json["keys"][0]["kid"]
    assert jwt.get_unverified_header(body["access_token"])["kid"] == signing


def test_the_token_is_no_credential_for_gatehouses_own_api(client, machine):
    token = client.post(
        TOKEN, data=GRANT, headers=basic(machine["client_id"], machine["client_secret"])
    ).json["access_token"]

    response = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 401


def test_a_narrower_scope_may_be_asked_for_and_a_wider_one_is_refused(client, machine):
    auth = basic(machine["client_id"], machine["client_secret"])

    narrow = client.post(TOKEN, data={**GRANT, "scope": "email"}, headers=auth)
    wider = client.post(TOKEN, data={**GRANT, "scope": "email openid"}, headers=auth)
    unknown = client.post(TOKEN, data={**GRANT, "scope": "admin"}, headers=auth)

    assert narrow.status_code == 200
    assert verify(client, narrow.json["access_token"])["scope"] == "email"
    assert_oauth_error(wider, 400, "invalid_scope")
    assert_oauth_error(unknown, 400, "invalid_scope")


def test_a_client_secret_post_client_authenticates_in_the_body_only(client, admin):
    post = register(client, admin, **MACHINE)
    form = {**GRANT, "client_id": post["client_id"], "client_secret": post["client_secret"]}

    accepted = client.post(TOKEN, data=form)
    by_basic = client.post(
        TOKEN, data=GRANT, headers=basic(post["client_id"], post["client_secret"])
    )

    assert accepted.status_code == 200, accepted.json
    assert verify(client, accepted.json["access_token"])["client_id"] == post["client_id"]
    assert_oauth_error(by_basic, 401, "invalid_client")


def test_a_client_secret_basic_client_cannot_send_its_secret_in_the_body(client, machine):
    form = {**GRANT, "client_id": machine["client_id"], "client_secret": machine["client_secret"]}

    assert_oauth_error(client.post(TOKEN, data=form), 401, "invalid_client")


@pytest.mark.parametrize("who", ["wrong secret", "unknown client", "no credentials"])
def test_a_client_that_cannot_authenticate_is_invalid_client_with_a_basic_challenge(
    client, machine, who
):
    headers = {
        "wrong secret": basic(machine["client_id"], machine["client_secret"] + "x"),
        "unknown client": basic("nobody", machine["client_secret"]),
        "no credentials": {},
    }[who]

    response = client.post(TOKEN, data=GRANT, headers=headers)

    assert_oauth_error(response, 401, "invalid_client")
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_a_client_registered_without_client_credentials_is_unauthorized_client(client, admin):
    web = register(client, admin, **WEB_APP)

    response = client.post(TOKEN, data=GRANT, headers=basic(web["client_id"], web["client_secret"]))

    assert_oauth_error(response, 400, "unauthorized_client")


def test_a_public_client_cannot_use_client_credentials(client, admin):
    public = register(
        client,
        admin,
        client_name="SPA",
        redirect_uris=["https://spa.example.com/cb"],
        token_endpoint_auth_method="none",
    )

    response = client.post(TOKEN, data={**GRANT, "client_id": public["client_id"]})

    assert_oauth_error(response, 401, "invalid_client")


@pytest.mark.parametrize("grant", ["password", "implicit", "client_credentials ", ""])
def test_grants_not_implemented_are_unsupported_grant_type(client, machine, grant):
    response = client.post(
        TOKEN,
        data={"grant_type": grant, "username": "a", "password": "b", "code": "c"},
        headers=basic(machine["client_id"], machine["client_secret"]),
    )

    assert_oauth_error(response, 400, "unsupported_grant_type")


@pytest.mark.parametrize("grant", ["authorization_code", "refresh_token"])
def test_a_machine_client_is_not_authorized_for_the_user_grants(client, machine, grant):
    response = client.post(
        TOKEN,
        data={"grant_type": grant, "code": "c", "refresh_token": "r"},
        headers=basic(machine["client_id"], machine["client_secret"]),
    )

    assert_oauth_error(response, 400, "unauthorized_client")


def test_the_token_endpoint_takes_only_post(client):
    assert client.get(TOKEN).status_code == 405


def test_after_a_rotation_both_secrets_work_until_the_overlap_ends(app, client, admin, machine):
    old = machine["client_secret"]
    new = client.post(f"{CLIENTS}{machine['id']}/rotate-secret", headers=admin.headers).json[
        "client_secret"
    ]

    assert client.post(TOKEN, data=GRANT, headers=basic(machine["client_id"], old)).status_code == (
        200
    )
    assert client.post(TOKEN, data=GRANT, headers=basic(machine["client_id"], new)).status_code == (
        200
    )
    with app.app_context():
        db.session.execute(
            update(OAuthClient)
            .where(OAuthClient.id == uuid.UUID(machine["id"]))
            .values(previous_secret_expires_at=utcnow() - timedelta(seconds=1))
        )
        db.session.commit()
        db.session.remove()

    expired = client.post(TOKEN, data=GRANT, headers=basic(machine["client_id"], old))
    assert_oauth_error(expired, 401, "invalid_client")
    assert client.post(TOKEN, data=GRANT, headers=basic(machine["client_id"], new)).status_code == (
        200
    )


def test_a_deleted_client_gets_no_more_tokens(client, admin, machine):
    client.delete(f"{CLIENTS}{machine['id']}", headers=admin.headers)

    response = client.post(
        TOKEN, data=GRANT, headers=basic(machine["client_id"], machine["client_secret"])
    )

    assert_oauth_error(response, 401, "invalid_client")


def test_a_removed_grant_takes_effect_on_the_next_request(client, admin, machine):
    client.patch(
        f"{CLIENTS}{machine['id']}",
        json={
            "grant_types": ["authorization_code"],
            "redirect_uris": ["https://billing.example.com/cb"],
        },
        headers=admin.headers,
    )

    response = client.post(
        TOKEN, data=GRANT, headers=basic(machine["client_id"], machine["client_secret"])
    )

    assert_oauth_error(response, 400, "unauthorized_client")


def test_authlib_logs_nothing_below_info_even_when_the_service_logs_debug(client, machine, caplog):
    """Authlib's DEBUG lines hold each issued token (the log filter redacts JWTs too; this keeps
    them from being formatted at all)."""
    caplog.set_level(logging.DEBUG)

    token = client.post(
        TOKEN, data=GRANT, headers=basic(machine["client_id"], machine["client_secret"])
    ).json["access_token"]

    authlib_debug = [r for r in caplog.records if r.name.startswith("authlib")]
    assert authlib_debug == []
    assert token not in caplog.text
