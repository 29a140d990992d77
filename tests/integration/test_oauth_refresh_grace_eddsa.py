"""The provider's user grants under two settings the API shares: REFRESH_REUSE_GRACE (a refresh
token retried inside the window gets the same successor, later it revokes the family, exactly
as for the API), and an Ed25519 signing key (EdDSA ID and access tokens that verify against the
published JWKS with joserfc and with PyJWT, and an `at_hash` by SHA-512, Ed25519's hash)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any

import jwt as pyjwt
import pytest
from flask import Flask

from tests.support.oidc import ISSUER, USERINFO, refresh, tokens_for, verify_jwt
from tests.support.refresh_tokens import backdate_used_refresh_tokens
from webapp.security.keys import KeyRing, generate_jwk


@pytest.fixture
def grace_app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(refresh_reuse_grace=30)


def test_a_retry_inside_the_grace_window_gets_the_same_successor(grace_app, web_app, member):
    client = grace_app.test_client()
    first = tokens_for(grace_app, client, web_app, member)

    once = refresh(client, web_app, first["refresh_token"])
    again = refresh(client, web_app, first["refresh_token"])

    assert once.status_code == again.status_code == 200, again.json
    assert again.json["refresh_token"] == once.json["refresh_token"]
    bearer = {"Authorization": f"Bearer {again.json['access_token']}"}
    assert client.get(USERINFO, headers=bearer).status_code == 200
    assert refresh(client, web_app, once.json["refresh_token"]).status_code == 200


def test_a_retry_after_the_grace_window_revokes_the_family(grace_app, web_app, member):
    client = grace_app.test_client()
    first = tokens_for(grace_app, client, web_app, member)
    successor = refresh(client, web_app, first["refresh_token"]).json
    backdate_used_refresh_tokens(grace_app, 60)

    late = refresh(client, web_app, first["refresh_token"])

    assert late.status_code == 400
    assert late.json["error"] == "invalid_grant"
    assert refresh(client, web_app, successor["refresh_token"]).json["error"] == "invalid_grant"
    bearer = {"Authorization": f"Bearer {successor['access_token']}"}
    assert client.get(USERINFO, headers=bearer).status_code == 401


@pytest.fixture
def eddsa_app(make_app: Callable[..., Flask]) -> Flask:
    ring = KeyRing.from_jwks(
        {"keys": [generate_jwk("EdDSA"), {**generate_jwk("EdDSA"), "status": "next"}]}
    )
    return make_app(jwt_keys=json.dumps(ring.to_jwks()))


def sha512_half(value: str) -> str:
    """OIDC's `at_hash` for an Ed25519 key, computed here independently: the left half of the
    SHA-512 (the OpenID Connect WG's answer for EdDSA with Ed25519, connect issue 1125)."""
    digest = hashlib.sha512(value.encode()).digest()
    return base64.urlsafe_b64encode(digest[:32]).rstrip(b"=").decode()


def test_an_ed25519_key_signs_id_tokens_that_verify_against_the_jwks(eddsa_app, web_app, member):
    client = eddsa_app.test_client()

    body = tokens_for(eddsa_app, client, web_app, member)

    jwks: dict[str, Any] = client.get("/.well-known/jwks.json").json
    assert {key["kty"] for key in jwks["keys"]} == {"OKP"}
    # joserfc, against the JWKS as published.
    claims = verify_jwt(client, body["id_token"], audience=web_app["client_id"], typ="JWT")
    assert claims["sub"] == str(member.id)
    assert claims["nonce"] == "n-0S6_WzA2Mj"
    assert claims["at_hash"] == sha512_half(body["access_token"])
    access = verify_jwt(client, body["access_token"], audience="gatehouse", typ="at+jwt")
    assert access["sid"]
    # PyJWT, with the key the header's kid names in the same JWKS.
    header = pyjwt.get_unverified_header(body["id_token"])
    assert header["alg"] == "EdDSA"
    (jwk,) = [key for key in jwks["keys"] if key["kid"] == header["kid"]]
    decoded = pyjwt.decode(
        body["id_token"],
        pyjwt.PyJWK(jwk).key,
        algorithms=["EdDSA"],
        audience=web_app["client_id"],
        issuer=ISSUER,
    )
    assert decoded == claims
    # Discovery announces what the ID tokens are signed with.
    discovery = client.get("/.well-known/openid-configuration").json
    assert discovery["id_token_signing_alg_values_supported"] == ["EdDSA"]
    # And the refresh grant's ID token is the same.
    again = refresh(client, web_app, body["refresh_token"]).json
    renewed = verify_jwt(client, again["id_token"], audience=web_app["client_id"], typ="JWT")
    assert renewed["at_hash"] == sha512_half(again["access_token"])
