"""The OpenID Provider metadata (OpenID Connect Discovery 1.0, RFC 8414): only what the provider
implements now is listed, so a client library never tries a flow that would fail."""

from __future__ import annotations

from typing import Any

from webapp.config import Settings

JWKS_PATH = "/.well-known/jwks.json"
TOKEN_PATH = "/oauth/token"  # noqa: S105 - a path, not a secret


def document(settings: Settings) -> dict[str, Any]:
    issuer = settings.effective_oidc_issuer
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}{JWKS_PATH}",
        "token_endpoint": f"{issuer}{TOKEN_PATH}",
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
    }
