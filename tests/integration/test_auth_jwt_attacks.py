"""Forged, altered and misused bearer tokens are all refused with 401 and WWW-Authenticate."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from webapp.config import settings_of

ME = "/api/v1/users/me"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64json(value: dict) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def signing_key(app):
    return app.extensions["gatehouse_keyring"].signing_key


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def valid_claims(account, **changes) -> dict:
    """The claims of the account's real token, with fresh times and the given changes."""
    now = int(time.time())
    claims = {**claims_of(account.access_token), "iat": now, "exp": now + 300}
    claims["jti"] = str(uuid.uuid4())
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def mint(app, claims: dict, *, key=None, kid: str | None = None, alg: str = "RS256") -> str:
    real = signing_key(app)
    return jwt.encode(
        claims,
        key if key is not None else real.private_key,
        algorithm=alg,
        headers={"kid": kid if kid is not None else real.kid},
    )


def hs256_token(app, claims: dict, secret: bytes) -> str:
    """Sign HS256 by hand: PyJWT refuses PEM keys as HMAC secrets, an attacker does not."""
    header = {"alg": "HS256", "typ": "JWT", "kid": signing_key(app).kid}
    signing_input = f"{b64json(header)}.{b64json(claims)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def get_me(client, authorization: str | None):
    headers = {"Authorization": authorization} if authorization is not None else {}
    return client.get(ME, headers=headers)


def assert_refused(response) -> None:
    assert response.status_code == 401, response.json
    assert response.mimetype == "application/problem+json"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "email" not in response.json


def test_a_token_minted_with_the_real_key_and_valid_claims_is_accepted(client, app, member):
    """The control for every attack below: the forging helper itself makes good tokens."""
    response = get_me(client, f"Bearer {mint(app, valid_claims(member))}")

    assert response.status_code == 200
    assert response.json["id"] == str(member.id)


def test_a_missing_authorization_header_is_refused(client):
    assert_refused(get_me(client, None))


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Bearer garbage", id="garbage"),
        pytest.param("Bearer ", id="empty"),
        pytest.param("Bearer a.b.c", id="three-junk-segments"),
        pytest.param("Basic dXNlcjpwYXNz", id="basic-scheme"),
        pytest.param("Token abc", id="other-scheme"),
    ],
)
def test_a_malformed_authorization_header_is_refused(client, authorization):
    assert_refused(get_me(client, authorization))


def test_a_real_token_under_another_scheme_is_refused(client, member):
    assert_refused(get_me(client, f"Basic {member.access_token}"))


def test_an_unsigned_alg_none_token_is_refused(client, app, member):
    header = {"alg": "none", "typ": "JWT", "kid": signing_key(app).kid}
    unsigned = f"{b64json(header)}.{b64json(valid_claims(member))}."

    assert_refused(get_me(client, f"Bearer {unsigned}"))


def test_an_alg_none_token_with_a_copied_signature_is_refused(client, app, member):
    header = {"alg": "none", "typ": "JWT", "kid": signing_key(app).kid}
    signature = member.access_token.rsplit(".", 1)[1]
    token = f"{b64json(header)}.{b64json(valid_claims(member))}.{signature}"

    assert_refused(get_me(client, f"Bearer {token}"))


def test_a_token_with_a_tampered_payload_is_refused(client, admin, member):
    header, _, signature = member.access_token.split(".")
    promoted = valid_claims(member, role="admin", sub=str(admin.id))
    forged = f"{header}.{b64json(promoted)}.{signature}"

    assert_refused(get_me(client, f"Bearer {forged}"))
    assert_refused(client.get("/api/v1/users/", headers={"Authorization": f"Bearer {forged}"}))


def test_a_token_with_a_tampered_signature_is_refused(client, member):
    header, payload, signature = member.access_token.split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    forged = f"{header}.{payload}.{signature[:middle]}{flipped}{signature[middle + 1 :]}"

    assert_refused(get_me(client, f"Bearer {forged}"))


def test_a_token_signed_by_another_key_under_the_real_kid_is_refused(client, app, member):
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    assert_refused(get_me(client, f"Bearer {mint(app, valid_claims(member), key=attacker)}"))


def test_an_eddsa_token_signed_by_another_key_under_the_real_kid_is_refused(client, app, member):
    attacker = ed25519.Ed25519PrivateKey.generate()
    token = mint(app, valid_claims(member), key=attacker, alg="EdDSA")

    assert_refused(get_me(client, f"Bearer {token}"))


def test_a_token_with_an_unknown_kid_is_refused(client, app, member):
    assert_refused(get_me(client, f"Bearer {mint(app, valid_claims(member), kid='unknown')}"))


def test_a_token_without_a_kid_is_refused(client, app, member):
    token = jwt.encode(valid_claims(member), signing_key(app).private_key, algorithm="RS256")

    assert_refused(get_me(client, f"Bearer {token}"))


def test_an_expired_token_is_refused(client, app, member):
    past = int(time.time()) - 3600
    expired = mint(app, valid_claims(member, iat=past - 900, exp=past))

    assert_refused(get_me(client, f"Bearer {expired}"))


def test_a_token_without_an_expiry_is_refused(client, app, member):
    token = mint(app, valid_claims(member, exp=None))

    assert_refused(get_me(client, f"Bearer {token}"))


def test_a_token_without_a_jti_or_iat_is_refused(client, app, member):
    assert_refused(get_me(client, f"Bearer {mint(app, valid_claims(member, jti=None))}"))
    assert_refused(get_me(client, f"Bearer {mint(app, valid_claims(member, iat=None))}"))


def test_a_token_for_another_audience_is_refused(client, app, member):
    assert_refused(get_me(client, f"Bearer {mint(app, valid_claims(member, aud='billing'))}"))


def test_a_token_without_an_audience_is_refused(client, app, member):
    assert_refused(get_me(client, f"Bearer {mint(app, valid_claims(member, aud=None))}"))


def test_a_token_from_another_issuer_is_refused(client, app, member):
    token = mint(app, valid_claims(member, iss="https://evil.example"))

    assert_refused(get_me(client, f"Bearer {token}"))


def test_a_token_not_yet_valid_is_refused(client, app, member):
    token = mint(app, valid_claims(member, nbf=int(time.time()) + 3600))

    assert_refused(get_me(client, f"Bearer {token}"))


def test_an_hs256_token_keyed_with_the_public_key_is_refused(client, app, member):
    public_pem = signing_key(app).public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    assert_refused(get_me(client, f"Bearer {hs256_token(app, valid_claims(member), public_pem)}"))


def test_an_hs256_token_keyed_with_the_secret_key_is_refused(client, app, member):
    secret = settings_of(app).secret_key.encode()

    assert_refused(get_me(client, f"Bearer {hs256_token(app, valid_claims(member), secret)}"))


def test_a_refresh_token_is_not_a_bearer_token(client, member):
    assert_refused(get_me(client, f"Bearer {member.refresh_token}"))


def test_a_signed_token_without_a_session_claim_is_refused(client, app, member):
    assert_refused(get_me(client, f"Bearer {mint(app, valid_claims(member, sid=None))}"))


def test_a_signed_token_for_a_session_that_does_not_exist_is_refused(client, app, member):
    token = mint(app, valid_claims(member, sid=str(uuid.uuid4())))

    assert_refused(get_me(client, f"Bearer {token}"))


def test_a_signed_token_pairing_one_user_with_another_users_session_is_refused(
    client, app, admin, member
):
    token = mint(app, valid_claims(member, sid=claims_of(admin.access_token)["sid"]))

    assert_refused(get_me(client, f"Bearer {token}"))


def test_a_signed_token_with_a_malformed_subject_is_refused(client, app, member):
    assert_refused(get_me(client, f"Bearer {mint(app, valid_claims(member, sub='root'))}"))


def test_a_signed_refresh_type_token_is_not_an_access_token(client, app, member):
    assert_refused(get_me(client, f"Bearer {mint(app, valid_claims(member, type='refresh'))}"))


def test_the_role_claim_grants_nothing_the_user_does_not_hold(client, app, member):
    """Even a validly signed token cannot raise its bearer's role: the role comes from the
    server-side user state, not from the token."""
    token = mint(app, valid_claims(member, role="admin"))

    response = client.get("/api/v1/users/", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 403
