"""The bearer access token of a request: read from `Authorization`, verified once per request
(`webapp.auth.tokens.decode_access_token` holds the rules) and memoised in `g` for the rate
limiter and the access decorators."""

from __future__ import annotations

from typing import Any

from flask import g, request

from webapp.auth.tokens import decode_access_token
from webapp.errors import Unauthorized


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def bearer_claims(*, optional: bool = False) -> dict[str, Any] | None:
    """Claims of this request's bearer token, verified once per request and memoised."""
    if "access_claims" in g:
        claims: dict[str, Any] | None = g.access_claims
        if claims is None and not optional:
            raise Unauthorized("Send a bearer access token.")
        return claims
    token = bearer_token()
    if token is None:
        g.access_claims = None
        if optional:
            return None
        raise Unauthorized("Send a bearer access token.")
    try:
        claims = decode_access_token(token)
    except Unauthorized:
        g.access_claims = None
        if optional:
            return None
        raise
    g.access_claims = claims
    return claims
