"""Authentication and authorization of a request, declared next to each route.

`@requires("users:read", owner="user_id")` authenticates the bearer token (signature, expiry,
live session, active user: see `webapp.auth.state`), then asks the RBAC policy. `@public` marks a
route that needs no identity. Every `/api/v1` route carries one or the other; a test enforces it.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import g

from webapp.auth.state import Principal, load_principal
from webapp.auth.tokens import bearer_claims
from webapp.errors import Unauthorized
from webapp.extensions import db
from webapp.security import rbac

F = TypeVar("F", bound=Callable[..., Any])
BEARER_SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}]


def authenticate() -> Principal:
    """The calling principal (memoised for the request), or 401."""
    principal: Principal | None = g.get("principal")
    if principal is not None:
        return principal
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
    g.principal = principal
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
    wrapper._apidoc = doc


def requires(permission: str, *, owner: str | None = None) -> Callable[[F], F]:
    """Authenticate, then require `permission`; `owner` names the view argument that holds the
    id of the target's owner, for permissions a role holds only on its own resources."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            principal = authenticate()
            owner_id = kwargs.get(owner) if owner else None
            rbac.require(principal.role, principal.user_id, permission, owner_id=owner_id)
            return view(*args, **kwargs)

        wrapper.required_permission = permission  # type: ignore[attr-defined]
        _document(wrapper, BEARER_SECURITY, permission)
        return cast(F, wrapper)

    return decorate


def authenticated(view: F) -> F:
    """Any signed-in user (the route works on the caller's own resources only)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        authenticate()
        return view(*args, **kwargs)

    wrapper.required_permission = "authenticated"  # type: ignore[attr-defined]
    _document(wrapper, BEARER_SECURITY, None)
    return cast(F, wrapper)


def public(view: F) -> F:
    view.required_permission = None  # type: ignore[attr-defined]
    _document(view, [], None)
    return view
