"""The OpenID Provider metadata (OpenID Connect Discovery 1.0, RFC 8414): only what the provider
implements now is listed, so a client library never tries a flow that would fail."""

from __future__ import annotations

from typing import Any

from webapp.config import Settings
from webapp.oauth.metadata import (
    AUTH_METHODS,
    CONFIDENTIAL_METHODS,
    GRANT_TYPES,
    PROMPT_VALUES,
    SCOPES,
)

JWKS_PATH = "/.well-known/jwks.json"
TOKEN_PATH = "/oauth/token"  # noqa: S105 - a path, not a secret
USERINFO_PATH = "/oauth/userinfo"
REVOCATION_PATH = "/oauth/revoke"
INTROSPECTION_PATH = "/oauth/introspect"
# What an ID token or UserInfo can hold (`sub` always; the rest by scope, see docs/oidc.md).
CLAIMS = [
    "sub",
    "iss",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "amr",
    "azp",
    "at_hash",
    "name",
    "updated_at",
    "email",
    "email_verified",
]
AUTHORIZE_PATH = "/oauth/authorize"
END_SESSION_PATH = "/oauth/logout"


def document(settings: Settings, signing_algs: list[str]) -> dict[str, Any]:
    """`signing_algs`: the algorithms of the signing key and of the next one (after a rotation
    ID tokens are signed with it), the first the current one's."""
    issuer = settings.effective_oidc_issuer
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}{JWKS_PATH}",
        "authorization_endpoint": f"{issuer}{AUTHORIZE_PATH}",
        "token_endpoint": f"{issuer}{TOKEN_PATH}",
        "userinfo_endpoint": f"{issuer}{USERINFO_PATH}",
        "revocation_endpoint": f"{issuer}{REVOCATION_PATH}",
        "introspection_endpoint": f"{issuer}{INTROSPECTION_PATH}",
        "end_session_endpoint": f"{issuer}{END_SESSION_PATH}",
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "prompt_values_supported": list(PROMPT_VALUES),
        "authorization_response_iss_parameter_supported": True,
        "grant_types_supported": list(GRANT_TYPES),
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "revocation_endpoint_auth_methods_supported": list(CONFIDENTIAL_METHODS),
        "introspection_endpoint_auth_methods_supported": list(CONFIDENTIAL_METHODS),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": signing_algs,
        "scopes_supported": list(SCOPES),
        "claims_supported": CLAIMS,
    }
