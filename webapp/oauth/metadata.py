"""The rules of client metadata (RFC 7591 names), applied to a whole client on create and update.

OAuth 2.1's safe subset only: the `authorization_code` (with PKCE), `refresh_token` and
`client_credentials` grants, `response_type=code`, redirect URIs compared as exact strings (so
none may hold a wildcard or a fragment), `https` except for loopback development hosts.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from webapp.errors import ValidationFailed

AUTHORIZATION_CODE, REFRESH_TOKEN, CLIENT_CREDENTIALS = (
    "authorization_code",
    "refresh_token",
    "client_credentials",
)
GRANT_TYPES = (AUTHORIZATION_CODE, REFRESH_TOKEN, CLIENT_CREDENTIALS)
RESPONSE_TYPES = ("code",)
CONFIDENTIAL_METHODS = ("client_secret_basic", "client_secret_post")
AUTH_METHODS = (*CONFIDENTIAL_METHODS, "none")
PROMPT_VALUES = ("none", "login", "consent")  # /oauth/authorize's `prompt`
SCOPES = ("openid", "profile", "email")
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
MAX_URI_LENGTH = 2000
MAX_URIS = 20
SLUG = "invalid-client-metadata"  # RFC 7591 §3.2.2's error code, as a problem type


def uri_problem(uri: str) -> str | None:
    """Why `uri` cannot be registered as a redirect URI, or None when it can."""
    if len(uri) > MAX_URI_LENGTH:
        return f"longer than {MAX_URI_LENGTH} characters"
    if any(c.isspace() for c in uri):
        return "contains whitespace"
    if "*" in uri:
        return "wildcards are not allowed (redirect URIs are matched exactly)"
    if "#" in uri:
        return "a fragment is not allowed"
    try:
        parts = urlsplit(uri)
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return "not a valid URL"
    if not parts.scheme or not parts.netloc or not hostname:
        return "must be an absolute URL"
    if "@" in parts.netloc:
        return "user information is not allowed"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and hostname in LOOPBACK_HOSTS:
        return None
    return "must use https (http only for localhost, 127.0.0.1 or [::1])"


def _check_uris(field: str, uris: list[str], errors: dict[str, list[str]]) -> list[str]:
    if len(uris) > MAX_URIS:
        errors.setdefault(field, []).append(f"at most {MAX_URIS} URIs")
    for uri in uris:
        problem = uri_problem(uri)
        if problem:
            errors.setdefault(field, []).append(f"{uri[:100]}: {problem}")
    if len(set(uris)) != len(uris):
        errors.setdefault(field, []).append("duplicates are not allowed")
    return list(uris)


def check(metadata: dict[str, Any]) -> dict[str, Any]:
    """`metadata` (every field present) checked as a whole and normalised: defaults for
    `response_types`, grant types sorted, each scope once. Raises 422 `invalid-client-metadata`."""
    errors: dict[str, list[str]] = {}
    method = metadata["token_endpoint_auth_method"]
    grants: list[str] = metadata["grant_types"]
    if method not in AUTH_METHODS:
        errors["token_endpoint_auth_method"] = [f"one of {', '.join(AUTH_METHODS)}"]
    unknown = [g for g in grants if g not in GRANT_TYPES]
    if unknown or not grants:
        errors["grant_types"] = [f"one or more of {', '.join(GRANT_TYPES)}"]
    if method == "none" and CLIENT_CREDENTIALS in grants:
        errors.setdefault("grant_types", []).append(
            "a public client (token_endpoint_auth_method none) cannot use client_credentials"
        )
    if REFRESH_TOKEN in grants and AUTHORIZATION_CODE not in grants:
        errors.setdefault("grant_types", []).append(
            "refresh_token is issued only with authorization_code"
        )
    if method == "none" and AUTHORIZATION_CODE not in grants:
        errors.setdefault("grant_types", []).append(
            "a public client needs authorization_code (it cannot authenticate otherwise)"
        )

    redirect_uris = _check_uris("redirect_uris", metadata["redirect_uris"], errors)
    logout_uris = _check_uris(
        "post_logout_redirect_uris", metadata["post_logout_redirect_uris"], errors
    )
    if AUTHORIZATION_CODE in grants and not redirect_uris:
        errors.setdefault("redirect_uris", []).append("authorization_code needs at least one")
    if AUTHORIZATION_CODE not in grants and (redirect_uris or logout_uris):
        errors.setdefault("redirect_uris", []).append("only clients of authorization_code")

    expected = ["code"] if AUTHORIZATION_CODE in grants else []
    response_types = metadata.get("response_types")
    if response_types is None:
        response_types = expected
    elif sorted(set(response_types)) != expected:
        errors["response_types"] = [
            f"must be {expected} for grant_types {sorted(set(grants))}"
            if expected
            else "must be empty without authorization_code"
        ]

    scopes = metadata["scope"].split()
    unknown_scopes = [s for s in scopes if s not in SCOPES]
    if unknown_scopes:
        errors["scope"] = [
            f"unknown scope {s!r} (supported: {' '.join(SCOPES)})" for s in unknown_scopes
        ]
    if errors:
        raise ValidationFailed("The client metadata is not acceptable.", slug=SLUG, errors=errors)
    return {
        **metadata,
        "grant_types": sorted(set(grants)),
        "response_types": response_types,
        "redirect_uris": redirect_uris,
        "post_logout_redirect_uris": logout_uris,
        "scope": " ".join(dict.fromkeys(scopes)),  # once each, in the given order
    }
