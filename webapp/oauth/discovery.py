"""The OpenID Provider metadata (OpenID Connect Discovery 1.0, RFC 8414): only what the provider
implements now is listed, so a client library never tries a flow that would fail."""

from __future__ import annotations

from typing import Any

from webapp.config import Settings

JWKS_PATH = "/.well-known/jwks.json"


def document(settings: Settings) -> dict[str, Any]:
    issuer = settings.effective_oidc_issuer
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}{JWKS_PATH}",
    }
