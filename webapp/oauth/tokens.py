"""Tokens the provider issues to clients: access tokens in the RFC 9068 profile and ID tokens
(OpenID Connect Core §2), JWTs signed by the JWKS key that signs Gatehouse's own tokens.

An access token has header `typ: at+jwt` and `kid`; claims `iss` (the OIDC issuer), `aud`
(JWT_AUDIENCE), `sub`, `client_id`, `scope`, `iat`, `exp` (ACCESS_TOKEN_TTL later), `jti`. For
`client_credentials`, `sub` is the client itself; for a user's token (the `authorization_code`
and `refresh_token` grants) `sub` is the user's id and `sid` the provider session it belongs to,
so revoking the session (logout, revocation, a reused code or refresh token) ends it at once for
introspection and UserInfo. Gatehouse's own API refuses both kinds: they carry neither the
`type: access` claim its bearer check requires nor its issuer's token type.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt as pyjwt

from webapp.auth.tokens import LEEWAY_SECONDS, SUPPORTED_ALGORITHMS, keyring
from webapp.config import current_settings
from webapp.oauth.models import OAuthClient

# RFC 9068 §2.1: a resource server can tell these from ID tokens.
TOKEN_TYPE = "at+jwt"  # noqa: S105 - a media type, not a secret
ACCESS_CLAIMS = ("iss", "aud", "sub", "client_id", "iat", "exp", "jti")


def _sign(claims: dict[str, Any], typ: str) -> str:
    signing = keyring().signing_key
    return pyjwt.encode(
        claims, signing.private_key, algorithm=signing.alg, headers={"kid": signing.kid, "typ": typ}
    )


def _access_token(client: OAuthClient, sub: str, scope: str, **extra: Any) -> tuple[str, int]:
    settings = current_settings()
    now = int(time.time())
    ttl = settings.access_token_ttl
    claims = {
        "iss": settings.effective_oidc_issuer,
        "aud": settings.jwt_audience,
        "sub": sub,
        "client_id": client.client_id,
        "scope": scope,
        "iat": now,
        "exp": now + ttl,
        "jti": uuid.uuid4().hex,
        **extra,
    }
    return _sign(claims, TOKEN_TYPE), ttl


def client_access_token(client: OAuthClient, scope: str) -> dict[str, Any]:
    """The token response (RFC 6749 §5.1) of a `client_credentials` grant for `scope`."""
    token, ttl = _access_token(client, client.client_id, scope)
    response: dict[str, Any] = {"access_token": token, "token_type": "Bearer", "expires_in": ttl}
    if scope:
        response["scope"] = scope
    return response


def user_access_token(
    client: OAuthClient, user_id: uuid.UUID, session_id: uuid.UUID, scope: str
) -> tuple[str, int]:
    """A user's access token for `client` (and its lifetime in seconds), bound to the session."""
    return _access_token(client, str(user_id), scope, sid=str(session_id))


# OIDC Core §3.1.3.6: the hash of the ID token's `alg`. EdDSA names no hash; for Ed25519 (the
# only curve the keyring takes) the OpenID Connect WG settled on SHA-512, the hash Ed25519 signs
# with (connect issue 1125, the Token Hash Algorithms guide), and client libraries check that.
AT_HASH_ALGORITHMS = {"RS256": hashlib.sha256, "EdDSA": hashlib.sha512}


def at_hash(access_token: str, alg: str) -> str:
    """The left half of the hash of the token under `alg`'s hash, base64url without padding."""
    digest = AT_HASH_ALGORITHMS[alg](access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).decode().rstrip("=")


def id_token(
    client: OAuthClient,
    user_id: uuid.UUID,
    *,
    access_token: str,
    auth_time: int,
    amr: list[str],
    nonce: str | None,
) -> str:
    """An ID token for `client`: who the user is and how and when they authenticated; the
    profile and email claims are UserInfo's. Lives as long as an access token."""
    settings = current_settings()
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": settings.effective_oidc_issuer,
        "sub": str(user_id),
        "aud": client.client_id,
        "azp": client.client_id,
        "iat": now,
        "exp": now + settings.access_token_ttl,
        "auth_time": auth_time,
    }
    if amr:
        claims["amr"] = amr
    if nonce is not None:
        claims["nonce"] = nonce
    # The key that signs is the one whose hash `at_hash` takes.
    claims["at_hash"] = at_hash(access_token, keyring().signing_key.alg)
    return _sign(claims, "JWT")


@dataclass(frozen=True)
class AccessClaims:
    """A verified access token of the provider: whose (`sub`), for which client, which session
    (None for `client_credentials`), which scope."""

    claims: dict[str, Any]

    @property
    def client_id(self) -> str:
        return str(self.claims["client_id"])

    @property
    def session_id(self) -> uuid.UUID | None:
        sid = self.claims.get("sid")
        return uuid.UUID(sid) if isinstance(sid, str) else None

    @property
    def scopes(self) -> list[str]:
        return str(self.claims.get("scope") or "").split()


def verify_access_token(token: str) -> AccessClaims | None:
    """The claims of an authentic, unexpired access token this provider issued, else None (a
    Gatehouse API token, an ID token or anything forged or expired included)."""
    settings = current_settings()
    try:
        header = pyjwt.get_unverified_header(token)
        if header.get("typ") != TOKEN_TYPE:
            return None
        key = keyring().verification_key(str(header.get("kid", "")))
        if key is None:
            return None
        claims: dict[str, Any] = pyjwt.decode(
            token,
            key,
            algorithms=list(SUPPORTED_ALGORITHMS),
            audience=settings.jwt_audience,
            issuer=settings.effective_oidc_issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": list(ACCESS_CLAIMS)},
        )
    except (pyjwt.PyJWTError, ValueError):
        return None
    try:
        verified = AccessClaims(claims)
        verified.session_id  # noqa: B018 - a malformed `sid` is a malformed token
    except ValueError:
        return None
    return verified
