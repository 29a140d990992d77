"""Access tokens the provider issues to clients: JWTs in the RFC 9068 profile, signed by the
JWKS key that signs Gatehouse's own tokens.

Header `typ: at+jwt` and `kid`; claims `iss` (the OIDC issuer), `aud` (JWT_AUDIENCE), `sub` and
`client_id` (the client, for `client_credentials`: no user is involved), `scope`, `iat`, `exp`
(ACCESS_TOKEN_TTL later), `jti`. Gatehouse's own API refuses them: they carry neither the
`type: access` claim nor the session (`sid`) its bearer check requires.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt as pyjwt

from webapp.auth.tokens import keyring
from webapp.config import current_settings
from webapp.oauth.models import OAuthClient

# RFC 9068 §2.1: a resource server can tell these from ID tokens.
TOKEN_TYPE = "at+jwt"  # noqa: S105 - a media type, not a secret


def client_access_token(client: OAuthClient, scope: str) -> dict[str, Any]:
    """The token response (RFC 6749 §5.1) of a `client_credentials` grant for `scope`."""
    settings = current_settings()
    signing = keyring().signing_key
    now = int(time.time())
    ttl = settings.access_token_ttl
    claims = {
        "iss": settings.effective_oidc_issuer,
        "aud": settings.jwt_audience,
        "sub": client.client_id,
        "client_id": client.client_id,
        "scope": scope,
        "iat": now,
        "exp": now + ttl,
        "jti": uuid.uuid4().hex,
    }
    token = pyjwt.encode(
        claims,
        signing.private_key,
        algorithm=signing.alg,
        headers={"kid": signing.kid, "typ": TOKEN_TYPE},
    )
    response: dict[str, Any] = {"access_token": token, "token_type": "Bearer", "expires_in": ttl}
    if scope:
        response["scope"] = scope
    return response
