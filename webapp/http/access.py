"""Authentication and authorization of a request, declared next to each route.

`@requires("users:read", owner="user_id")` authenticates the bearer token (signature, expiry,
live session, active user: see `webapp.auth.state`), then asks the RBAC policy. `@public` marks a
route that needs no identity. Every `/api/v1` route carries one or the other; a test enforces it.

`@requires_recent_auth`, under either, also demands that the session checked a password or second
factor within `REAUTH_MAX_AGE` seconds (sensitive changes; `x-requires-recent-auth` in OpenAPI).

An `X-API-Key` authenticates as the key's owner through the same decorator: only on routes whose
permission is in `rbac.API_KEY_PERMISSIONS`, and only when the key's scopes include it (a scope is
the permission string). The OpenAPI document lists `apiKeyAuth` beside `bearerAuth` on exactly
those operations, with the scope each needs (`x-api-key-scope`).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import g, request

from webapp.apikeys import service as apikeys
from webapp.auth.reauth import ensure_recent_auth
from webapp.auth.state import Principal, load_principal
from webapp.errors import DomainError, Forbidden, Unauthorized
from webapp.extensions import db
from webapp.http.bearer import bearer_claims, bearer_token
from webapp.http.origin import client_ip
from webapp.security import rbac

F = TypeVar("F", bound=Callable[..., Any])
BEARER_SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}]
API_KEY_SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"apiKeyAuth": []}]
API_KEY_HEADER = "X-API-Key"


def api_key_principal(*, optional: bool = False) -> Principal | None:
    """The principal of this request's `X-API-Key`, verified once per request and memoised (the
    rate limiter keys on it too); 401 for a key that is malformed, unknown, wrong, revoked,
    expired, rotated out, or whose owner is disabled."""
    if "api_key_principal" not in g:
        presented = request.headers.get(API_KEY_HEADER)
        g.api_key_principal = (
            apikeys.authenticate(db.session, presented, client_ip()) if presented else None
        )
    principal: Principal | None = g.api_key_principal
    if principal is None and not optional:
        raise Unauthorized(
            "The API key is invalid, expired or revoked.",
            slug="invalid-api-key",
            headers={"WWW-Authenticate": 'ApiKey realm="gatehouse"'},
        )
    return principal


def authenticate(*, allow_api_key: bool = False) -> Principal:
    """The calling principal (memoised for the request), or 401; an API key on a route that
    does not accept keys is 403."""
    principal: Principal | None = g.get("principal")
    if principal is None:
        if API_KEY_HEADER in request.headers:
            if bearer_token() is not None:
                raise DomainError(
                    "Send either a bearer token or an API key, not both.",
                    slug="ambiguous-credentials",
                )
            principal = api_key_principal()
            assert principal is not None
        else:
            principal = _bearer_principal()
        g.principal = principal
    if principal.api_key_id is not None and not allow_api_key:
        raise Forbidden(
            "This endpoint does not accept API keys; use a bearer access token.",
            slug="api-key-not-allowed",
        )
    return principal


def _bearer_principal() -> Principal:
    claims = bearer_claims()
    assert claims is not None
    try:
        user_id, session_id = uuid.UUID(claims["sub"]), uuid.UUID(claims["sid"])
    except (ValueError, TypeError):
        raise Unauthorized("The access token is invalid.", slug="invalid-token") from None
    principal = load_principal(db.session, user_id, session_id)
    if principal is None:
        raise Unauthorized(
            "The session has ended or the account is disabled.", slug="invalid-token"
        )
    return principal


def current_principal() -> Principal:
    principal: Principal | None = g.get("principal")
    if principal is None:
        raise RuntimeError("current_principal() outside an authenticated route")
    return principal


def _document(wrapper: Any, security: list[dict[str, list[str]]], permission: str | None) -> None:
    doc = getattr(wrapper, "_apidoc", {})
    manual = doc.setdefault("manual_doc", {})
    manual["security"] = security
    if permission:
        roles = ", ".join(rbac.roles_with(permission)) or "none"
        manual.setdefault("description", "")
        manual["description"] = (
            f"{manual['description']}\n\nPermission `{permission}` (any target: {roles})."
        ).strip()
        if permission in rbac.API_KEY_PERMISSIONS:
            manual["description"] += f" API keys: scope `{permission}`."
            manual["x-api-key-scope"] = permission
    wrapper._apidoc = doc


def requires(permission: str, *, owner: str | None = None) -> Callable[[F], F]:
    """Authenticate, then require `permission`; `owner` names the view argument that holds the
    id of the target's owner, for permissions a role holds only on its own resources."""

    usable_by_keys = permission in rbac.API_KEY_PERMISSIONS

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            principal = authenticate(allow_api_key=usable_by_keys)
            if principal.api_key_id is not None:
                rbac.require_scope(principal.scopes, permission)
            owner_id = kwargs.get(owner) if owner else None
            rbac.require(principal.role, principal.user_id, permission, owner_id=owner_id)
            return view(*args, **kwargs)

        # Attributes of the view function, by which the tests that walk the route table know
        # each route's access; a function's type declares none of them.
        wrapper.required_permission = permission  # type: ignore[attr-defined]
        wrapper.api_key_scope = permission if usable_by_keys else None  # type: ignore[attr-defined]
        _document(wrapper, API_KEY_SECURITY if usable_by_keys else BEARER_SECURITY, permission)
        return cast(F, wrapper)

    return decorate


def authenticated(view: F) -> F:
    """Any signed-in user (the route works on the caller's own resources only)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        authenticate()
        return view(*args, **kwargs)

    # An attribute of the view function (see `requires`).
    wrapper.required_permission = "authenticated"  # type: ignore[attr-defined]
    _document(wrapper, BEARER_SECURITY, None)
    return cast(F, wrapper)


def requires_recent_auth(view: F) -> F:
    """Sensitive changes: on top of `@authenticated` / `@requires`, the caller's session must
    have checked a password or second factor within `REAUTH_MAX_AGE` seconds, else 403
    `reauthentication-required` (see `webapp.auth.reauth`). API keys are refused (403
    `api-key-not-allowed`). Place it right under the authentication decorator, above rate limits
    and `@idempotent*`, so that a refusal neither spends a budget nor settles an
    `Idempotency-Key`."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        principal = authenticate()
        ensure_recent_auth(db.session, principal.session_id)
        return view(*args, **kwargs)

    # Attributes of the view function (see `requires`); `_apidoc` is flask-smorest's.
    wrapper.requires_recent_auth = True  # type: ignore[attr-defined]
    doc = getattr(wrapper, "_apidoc", {})
    manual = doc.setdefault("manual_doc", {})
    manual["x-requires-recent-auth"] = True
    manual["description"] = (
        f"{manual.get('description', '')}\n\nRecent authentication: the session must have "
        "checked a password or second factor within `REAUTH_MAX_AGE` seconds, else 403 "
        "`reauthentication-required` (renew with `POST /api/v1/auth/reauthenticate`)."
    ).strip()
    wrapper._apidoc = doc  # type: ignore[attr-defined]
    return cast(F, wrapper)


def public(view: F) -> F:
    # An attribute of the view function (see `requires`).
    view.required_permission = None  # type: ignore[attr-defined]
    _document(view, [], None)
    return view
