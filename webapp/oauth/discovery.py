"""The OpenID Provider metadata (OpenID Connect Discovery 1.0, RFC 8414): only what the provider
implements now is listed, so a client library never tries a flow that would fail."""

from __future__ import annotations

from typing import Any

from webapp.config import Settings

JWKS_PATH = "/.well-known/jwks.json"
TOKEN_PATH = "/oauth/token"  # noqa: S105 - a path, not a secret
AUTHORIZE_PATH = "/oauth/authorize"
END_SESSION_PATH = "/oauth/logout"


def document(settings: Settings) -> dict[str, Any]:
    issuer = settings.effective_oidc_issuer
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}{JWKS_PATH}",
        "authorization_endpoint": f"{issuer}{AUTHORIZE_PATH}",
        "token_endpoint": f"{issuer}{TOKEN_PATH}",
        "end_session_endpoint": f"{issuer}{END_SESSION_PATH}",
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "prompt_values_supported": ["none", "login", "consent"],
        "authorization_response_iss_parameter_supported": True,
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
    }
