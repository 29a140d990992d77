"""Role-based access control: the one policy every permission check goes through.

A permission is `resource:action`. A role grants it either for any target (`resource:action:any`)
or only for the caller's own resources (`resource:action:own`). Routes declare what they need
with `webapp.http.access.requires`; services call `require` for checks that depend on the target.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Protocol

from webapp.errors import Forbidden

ADMIN, USER = "admin", "user"
ROLES = (ADMIN, USER)

_USER_GRANTS = frozenset(
    {
        "users:read:own",
        "users:update:own",
        "sessions:manage:own",
    }
)
_ADMIN_GRANTS = _USER_GRANTS | frozenset(
    {
        "users:list:any",
        "users:create:any",
        "users:read:any",
        "users:update:any",
        "users:delete:any",
        "users:role:any",
        "users:replace:any",
        "audit:read:any",
        "jobs:manage:any",
        "users:mfa-reset:any",
        "oauth-clients:manage:any",
        "webhooks:manage:any",
    }
)
GRANTS: dict[str, frozenset[str]] = {ADMIN: _ADMIN_GRANTS, USER: _USER_GRANTS}

# The permissions an API key may carry as scopes (a scope is the permission string itself). A key
# acts as its owner, so it gets scope ∩ the owner's current grants. Left out on purpose: role
# changes and MFA resets (privilege and account takeover stay with a signed-in human), and every
# `@authenticated` route (sessions, passwords, MFA, API keys themselves: a key cannot mint keys).
API_KEY_PERMISSIONS = frozenset(
    {
        "users:list",
        "users:create",
        "users:read",
        "users:update",
        "users:replace",
        "users:delete",
        "audit:read",
        "jobs:manage",
    }
)

# Writes that grant privilege or hand an account to someone else. No API key holds them, whatever
# its scopes: a leaked key must not be able to mint an administrator, point a victim's account at
# the attacker's mailbox (then reset its password), or create credentials that outlive the key.
# Services name the ones a write touches and call `require_human`; a human caller still needs the
# route's own permission (e.g. `users:replace`), which these do not replace.
USERS_ROLE = "users:role"  # any role on create, or a role change (POST, PUT, the role endpoint)
USERS_EMAIL = "users:email"  # changing an account's address
# setting a password (POST /users with `password`)
USERS_PASSWORD = "users:password"  # noqa: S105 - a permission name, not a secret
USERS_REACTIVATE = "users:reactivate"  # re-enabling a disabled account (restores its credentials)
HUMAN_ONLY = frozenset({USERS_ROLE, USERS_EMAIL, USERS_PASSWORD, USERS_REACTIVATE})


class Credential(Protocol):
    """What a call was authenticated with: `api_key_id` is set when an API key made it
    (`Principal` and `webapp.context.Origin` both qualify)."""

    @property
    def api_key_id(self) -> uuid.UUID | None: ...


def permissions() -> set[str]:
    """Every permission some role can hold, without its scope (for docs and tests)."""
    return {grant.rsplit(":", 1)[0] for grants in GRANTS.values() for grant in grants}


def allows(
    role: str,
    permission: str,
    *,
    owner_id: uuid.UUID | None = None,
    caller_id: uuid.UUID | None = None,
) -> bool:
    grants = GRANTS.get(role, frozenset())
    if f"{permission}:any" in grants:
        return True
    return f"{permission}:own" in grants and owner_id is not None and owner_id == caller_id


def require(
    role: str, caller_id: uuid.UUID, permission: str, *, owner_id: uuid.UUID | None = None
) -> None:
    if not allows(role, permission, owner_id=owner_id, caller_id=caller_id):
        raise Forbidden(f"Your role does not allow {permission}.")


def require_scope(scopes: Iterable[str], permission: str) -> None:
    """An API key's request: the permission must be usable by keys and among the key's scopes."""
    if permission not in API_KEY_PERMISSIONS or permission not in scopes:
        raise Forbidden(
            f"This API key's scopes do not include {permission}.", slug="insufficient-scope"
        )


def require_human(credential: Credential, touched: Iterable[str]) -> None:
    """The one rule for privilege- and takeover-relevant writes: refused (403
    `insufficient-scope`) when an API key makes them. Signed-in humans and the CLI pass."""
    refused = sorted(HUMAN_ONLY.intersection(touched))
    if refused and credential.api_key_id is not None:
        raise Forbidden(
            f"API keys can never hold {', '.join(refused)}; sign in to do this.",
            slug="insufficient-scope",
        )


def holdable(role: str, permission: str) -> bool:
    """The role holds `permission` on some target (any, or its own)."""
    grants = GRANTS.get(role, frozenset())
    return f"{permission}:any" in grants or f"{permission}:own" in grants


def roles_with(permission: str) -> Iterable[str]:
    return [role for role in ROLES if f"{permission}:any" in GRANTS[role]]
