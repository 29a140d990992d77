"""Access tokens (claims, kid), the published JWKS, and signing-key rotation."""

from __future__ import annotations

import json
import uuid

import jwt
from sqlalchemy import select

from tests.support.accounts import STRONG_PASSWORD
from webapp.auth.models import AuthSession
from webapp.extensions import db
from webapp.security.keys import KeyRing, generate_jwk

JWKS = "/.well-known/jwks.json"
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k"}


def published_key(client, kid: str) -> jwt.PyJWK:
    jwks = jwt.PyJWKSet.from_dict(client.get(JWKS).json)
    return jwks[kid]


def verify_offline(client, token: str) -> dict:
    """What an independent service does: fetch the JWKS, pick the kid, check everything."""
    kid = jwt.get_unverified_header(token)["kid"]
    return jwt.decode(
        token,
        published_key(client, kid),
        algorithms=["RS256", "EdDSA"],
        audience="gatehouse",
        issuer="gatehouse",
    )


def me(client, token: str):
    return client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})


def test_access_token_carries_the_specified_claims(client, app, member):
    claims = verify_offline(client, member.access_token)

    assert claims["iss"] == "gatehouse"
    assert claims["aud"] == "gatehouse"
    assert claims["sub"] == str(member.id)
    assert claims["role"] == "user"
    assert claims["exp"] - claims["iat"] == 900
    assert uuid.UUID(claims["jti"])
    with app.app_context():
        session = db.session.get(AuthSession, uuid.UUID(claims["sid"]))
        assert session is not None
        assert session.user_id == member.id
        db.session.remove()


def test_each_access_token_has_its_own_jti_and_session(client, member):
    again = client.post(
        "/api/v1/auth/login", json={"email": member.email, "password": STRONG_PASSWORD}
    ).json["access_token"]

    first, second = verify_offline(client, member.access_token), verify_offline(client, again)

    assert first["jti"] != second["jti"]
    assert first["sid"] != second["sid"]


def test_access_token_header_names_an_asymmetric_alg_and_a_published_kid(client, member):
    header = jwt.get_unverified_header(member.access_token)

    assert header["alg"] in {"RS256", "EdDSA"}
    assert header["kid"] in {key["kid"] for key in client.get(JWKS).json["keys"]}


def test_jwks_is_cacheable_and_publishes_public_members_only(client):
    response = client.get(JWKS)

    assert response.status_code == 200
    assert "max-age=300" in response.headers["Cache-Control"]
    keys = response.json["keys"]
    assert keys
    for key in keys:
        assert not PRIVATE_MEMBERS & set(key)
        assert key["use"] == "sig"
        assert key["kid"]
        assert key["alg"] in {"RS256", "EdDSA"}


def test_jwks_needs_no_authentication(client):
    assert client.get(JWKS, headers={"Authorization": "Bearer garbage"}).status_code == 200


def test_jwks_max_age_follows_the_setting(make_app):
    response = make_app(jwks_max_age=42).test_client().get(JWKS)

    assert "max-age=42" in response.headers["Cache-Control"]


def test_jwks_publishes_the_next_key_before_it_signs(make_app):
    ring = KeyRing.from_jwks({"keys": [generate_jwk("RS256")]}).rotated()
    assert ring.next_key is not None

    published = make_app(jwt_keys=json.dumps(ring.to_jwks())).test_client().get(JWKS).json

    kids = [key["kid"] for key in published["keys"]]
    assert ring.signing_key.kid in kids
    assert ring.next_key.kid in kids


def test_key_rotation_logs_no_one_out_and_no_cached_verifier_fails(make_app, make_user):
    before = KeyRing.from_jwks({"keys": [generate_jwk("RS256")]}).rotated()
    old_app = make_app(jwt_keys=json.dumps(before.to_jwks()))
    old_client = old_app.test_client()
    account = make_user(login=False)
    old_token = old_client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": STRONG_PASSWORD}
    ).json["access_token"]
    jwks_cached_before_rotation = jwt.PyJWKSet.from_dict(old_client.get(JWKS).json)

    after = before.rotated()
    new_app = make_app(jwt_keys=json.dumps(after.to_jwks()))
    new_client = new_app.test_client()
    new_token = new_client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": STRONG_PASSWORD}
    ).json["access_token"]

    # The token signed before the rotation keeps working against the rotated service...
    assert jwt.get_unverified_header(old_token)["kid"] == before.signing_key.kid
    assert me(new_client, old_token).status_code == 200
    # ...the rotated service signs with the key that was already published...
    assert before.next_key is not None
    new_kid = jwt.get_unverified_header(new_token)["kid"]
    assert new_kid == before.next_key.kid
    # ...so a verifier still holding the pre-rotation JWKS accepts the new tokens.
    claims = jwt.decode(
        new_token,
        jwks_cached_before_rotation[new_kid],
        algorithms=["RS256"],
        audience="gatehouse",
        issuer="gatehouse",
    )
    assert claims["sub"] == str(account.id)
    assert before.signing_key.kid in {k["kid"] for k in new_client.get(JWKS).json["keys"]}


def test_a_token_signed_by_a_key_rotated_out_twice_is_rejected(make_app, make_user):
    first = KeyRing.from_jwks({"keys": [generate_jwk("RS256")]})
    old_client = make_app(jwt_keys=json.dumps(first.to_jwks())).test_client()
    account = make_user(login=False)
    token = old_client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": STRONG_PASSWORD}
    ).json["access_token"]

    # The first rotation only stages a next key (a ring with none can't promote one yet).
    twice = first.rotated().rotated().rotated()
    assert twice.verification_key(first.signing_key.kid) is None
    response = me(make_app(jwt_keys=json.dumps(twice.to_jwks())).test_client(), token)

    assert response.status_code == 401
    assert "WWW-Authenticate" in response.headers


def test_a_login_session_row_is_stored_per_token_pair(client, app, member):
    claims = verify_offline(client, member.access_token)

    with app.app_context():
        sessions = list(
            db.session.scalars(select(AuthSession).where(AuthSession.user_id == member.id))
        )
        db.session.remove()
    assert [str(s.id) for s in sessions] == [claims["sid"]]
