"""Token formats: signed JWT access tokens (flask-jwt-extended, keys by `kid`) and opaque
refresh tokens.

Access tokens carry `iss`, `aud`, `sub` (user id), `exp`, `iat`, `jti`, `role`, `sid` (the
session, checked on every request so that logout takes effect at once) and `auth_time` (the
session's last password or second-factor check; informational — the recent-authentication check
reads the session row, see `webapp.auth.reauth`). Refresh tokens are
`<token id>.<HMAC-SHA256(SECRET_KEY, token id)>`: nothing about them is stored in plain form, a
database leak alone does not reveal one, and the server can re-issue a token's successor inside
the reuse grace window without keeping it.

Everything here takes the token as a plain string; reading it from a request's `Authorization`
header is the HTTP layer's (`webapp.http.bearer`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt as pyjwt
from flask import Flask, current_app
from flask_jwt_extended import create_access_token, decode_token

from webapp.config import current_settings, settings_of
from webapp.errors import Unauthorized
from webapp.extensions import jwt
from webapp.security.keys import KeyRing

SUPPORTED_ALGORITHMS = ["RS256", "EdDSA"]
REQUIRED_CLAIMS = ("sub", "sid", "exp", "iat", "jti")
LEEWAY_SECONDS = 5


def keyring() -> KeyRing:
    ring: KeyRing = current_app.extensions["gatehouse_keyring"]
    return ring


def init_app(app: Flask, ring: KeyRing) -> None:
    settings = settings_of(app)
    app.extensions["gatehouse_keyring"] = ring
    app.extensions["gatehouse_verified_tokens"] = VerifiedTokens()
    app.config.update(
        JWT_ALGORITHM=ring.signing_key.alg,
        JWT_DECODE_ALGORITHMS=SUPPORTED_ALGORITHMS,
        JWT_TOKEN_LOCATION=["headers"],
        JWT_ACCESS_TOKEN_EXPIRES=timedelta(seconds=settings.access_token_ttl),
        JWT_ENCODE_ISSUER=settings.jwt_issuer,
        JWT_DECODE_ISSUER=settings.jwt_issuer,
        JWT_ENCODE_AUDIENCE=settings.jwt_audience,
        JWT_DECODE_AUDIENCE=settings.jwt_audience,
        JWT_ENCODE_NBF=False,
        JWT_DECODE_LEEWAY=LEEWAY_SECONDS,
        # flask-jwt-extended wants a key at init even though the loaders below supply them.
        JWT_SECRET_KEY=settings.secret_key,
    )
    jwt.init_app(app)


@jwt.encode_key_loader
def _signing_key(_identity: Any) -> Any:
    return keyring().signing_key.private_key


@jwt.decode_key_loader
def _verification_key(header: dict[str, Any], _payload: dict[str, Any]) -> Any:
    key = keyring().verification_key(str(header.get("kid", "")))
    if key is None:
        raise pyjwt.InvalidKeyError("unknown key id")
    return key


def issue_access_token(
    user_id: uuid.UUID, role: str, session_id: uuid.UUID, auth_time: datetime | None = None
) -> str:
    """`auth_time` (OIDC: seconds since the epoch) is the session's last password or
    second-factor check; refreshed tokens repeat it rather than move it forward."""
    signing = keyring().signing_key
    when = auth_time or datetime.now(UTC)
    token: str = create_access_token(
        identity=str(user_id),
        additional_claims={
            "role": role,
            "sid": str(session_id),
            "auth_time": int(when.timestamp()),
        },
        additional_headers={"kid": signing.kid},
    )
    return token


class VerifiedTokens:
    """Claims of access tokens this process has verified already, kept until they expire.

    Verifying a JWT costs far more than the rest of an authenticated read (three parses in
    flask-jwt-extended, base64 and the signature check), and a client presents the same token
    for its whole lifetime. Only the signature and claim checks are remembered: the session and
    user checks still run on every request.
    """

    def __init__(self, size: int = 8192) -> None:
        self._size = size
        self._claims: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, token: str) -> dict[str, Any] | None:
        with self._lock:
            claims = self._claims.get(token)
            if claims is None:
                return None
            if claims["exp"] + LEEWAY_SECONDS <= time.time():
                del self._claims[token]
                return None
            self._claims.move_to_end(token)
            return claims

    def put(self, token: str, claims: dict[str, Any]) -> None:
        with self._lock:
            self._claims[token] = claims
            while len(self._claims) > self._size:
                self._claims.popitem(last=False)


def decode_access_token(token: str) -> dict[str, Any]:
    """Verified claims of an access token; any defect is a 401 with no detail to help forgers."""
    verified: VerifiedTokens = current_app.extensions["gatehouse_verified_tokens"]
    cached = verified.get(token)
    if cached is not None:
        return cached
    try:
        claims: dict[str, Any] = decode_token(token)
    except Exception:  # noqa: BLE001 - every decoding failure means the same to the client
        raise Unauthorized(
            "The access token is invalid or expired.",
            slug="invalid-token",
            headers={"WWW-Authenticate": 'Bearer realm="gatehouse", error="invalid_token"'},
        ) from None
    # PyJWT checks `exp` only when present: a signed token without one must not live forever.
    if claims.get("type") != "access" or any(claims.get(c) is None for c in REQUIRED_CLAIMS):
        raise Unauthorized("The token is not an access token.", slug="invalid-token")
    verified.put(token, claims)
    return claims


def _refresh_mac(token_id: uuid.UUID) -> str:
    secret = current_settings().secret_key.encode()
    digest = hmac.new(secret, b"refresh:" + token_id.bytes, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def format_refresh_token(token_id: uuid.UUID) -> str:
    return f"{token_id.hex}.{_refresh_mac(token_id)}"


def parse_refresh_token(token: str) -> uuid.UUID | None:
    """The token id of a well-formed, authentic refresh token; None for anything else."""
    raw_id, _, mac = token.partition(".")
    try:
        token_id = uuid.UUID(hex=raw_id)
    except ValueError:
        return None
    if not hmac.compare_digest(mac.encode(), _refresh_mac(token_id).encode()):
        return None
    return token_id
