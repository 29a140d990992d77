"""The provider's user grants in tests: authorization codes issued the way the authorize
endpoint issues them (`webapp.oauth.codes.issue_code`, for a real user and client), redeemed
at /oauth/token, and the JWTs it answers verified with joserfc, a JOSE library independent of
the PyJWT that signs them, against the published JWKS only."""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from tests.support.accounts import Account
from tests.support.oauth import WEB_APP, register
from webapp.db import utcnow
from webapp.extensions import db
from webapp.oauth import codes
from webapp.oauth.models import OAuthClient

TOKEN = "/oauth/token"
REVOKE = "/oauth/revoke"
INTROSPECT = "/oauth/introspect"
USERINFO = "/oauth/userinfo"
ISSUER = "https://gatehouse.test"
CALLBACK = WEB_APP["redirect_uris"][0]
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"  # RFC 7636 appendix B
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
PUBLIC_APP: dict[str, Any] = {
    **WEB_APP,
    "client_name": "Single-page app",
    "token_endpoint_auth_method": "none",
}


def basic(client_id: str, secret: str) -> dict[str, str]:
    pair = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


def credentials(body: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(headers, form fields) that authenticate the registered client `body` its way."""
    method = body["token_endpoint_auth_method"]
    if method == "client_secret_basic":
        return basic(body["client_id"], body["client_secret"]), {}
    if method == "client_secret_post":
        return {}, {"client_id": body["client_id"], "client_secret": body["client_secret"]}
    return {}, {"client_id": body["client_id"]}


def issue_code(
    app: Flask,
    body: dict[str, Any],
    user_id: uuid.UUID,
    *,
    scope: str = "openid profile email",
    nonce: str | None = "n-0S6_WzA2Mj",
    challenge: str = CHALLENGE,
    auth_time: datetime | None = None,
    amr: list[str] | None = None,
) -> str:
    with app.app_context():
        client = db.session.get(OAuthClient, uuid.UUID(body["id"]))
        assert client is not None
        plain = codes.issue_code(
            db.session,
            client,
            user_id=user_id,
            redirect_uri=CALLBACK,
            scope=scope,
            code_challenge=challenge,
            nonce=nonce,
            auth_time=auth_time or utcnow() - timedelta(seconds=30),
            amr=["pwd"] if amr is None else amr,
        )
        db.session.commit()
        db.session.remove()
    return plain


def redeem(
    client: FlaskClient,
    body: dict[str, Any],
    code: str,
    *,
    verifier: str | None = VERIFIER,
    redirect_uri: str | None = CALLBACK,
    **extra: str,
) -> Any:
    headers, form = credentials(body)
    data = {"grant_type": "authorization_code", "code": code, **form, **extra}
    if verifier is not None:
        data["code_verifier"] = verifier
    if redirect_uri is not None:
        data["redirect_uri"] = redirect_uri
    return client.post(TOKEN, data=data, headers=headers)


def refresh(client: FlaskClient, body: dict[str, Any], refresh_token: str, **extra: str) -> Any:
    headers, form = credentials(body)
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, **form, **extra}
    return client.post(TOKEN, data=data, headers=headers)


def tokens_for(
    app: Flask, client: FlaskClient, body: dict[str, Any], account: Account, **code: Any
) -> dict[str, Any]:
    """A successful code exchange's token response."""
    response = redeem(client, body, issue_code(app, body, account.id, **code))
    assert response.status_code == 200, response.get_json()
    return dict(response.json)


def verify_jwt(client: FlaskClient, token: str, *, audience: str, typ: str) -> dict[str, Any]:
    """The claims of `token`, verified by joserfc with the JWKS document as published: the key
    named by `kid`, the algorithm the key declares, issuer, audience and expiry checked."""
    keys = KeySet.import_key_set(client.get("/.well-known/jwks.json").json)
    decoded = jose_jwt.decode(token, keys, algorithms=["RS256", "EdDSA"])
    assert decoded.header["typ"] == typ
    assert decoded.header["kid"] in {k.kid for k in keys.keys}
    claims: dict[str, Any] = dict(decoded.claims)
    jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": audience},
        exp={"essential": True},
        iat={"essential": True},
    ).validate(claims)
    return claims


def at_hash(access_token: str) -> str:
    """OIDC Core §3.1.3.6, computed here independently of the provider's code."""
    digest = hashlib.sha256(access_token.encode()).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def counted(client: FlaskClient, metric: str, **labels: str) -> float:
    """The value of the counter `metric` (its `_total` sample) for exactly these labels in a
    real /metrics scrape (0 if absent)."""
    text = client.get("/metrics").get_data(as_text=True)
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for found, value in re.findall(
        rf"^{re.escape(metric)}\{{([^}}]*)\}} (\S+)$", text, re.MULTILINE
    ):
        if ",".join(sorted(found.split(","))) == wanted:
            return float(value)
    return 0.0


def grants_counted(client: FlaskClient, **labels: str) -> float:
    """The value of gatehouse_oauth_token_grants_total for exactly these labels (0 if absent)."""
    return counted(client, "gatehouse_oauth_token_grants_total", **labels)


@pytest.fixture
def web_app(client: FlaskClient, admin: Account) -> dict[str, Any]:
    """A confidential client (client_secret_basic) of authorization_code and refresh_token."""
    return register(client, admin, **WEB_APP)


@pytest.fixture
def public_app(client: FlaskClient, admin: Account) -> dict[str, Any]:
    """A public client (`none`, PKCE only) of authorization_code and refresh_token."""
    return register(client, admin, **PUBLIC_APP)
