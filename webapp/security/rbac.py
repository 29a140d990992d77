"""Role-based access control: the one policy every permission check goes through.

A permission is `resource:action`. A role grants it either for any target (`resource:action:any`)
or only for the caller's own resources (`resource:action:own`). Routes declare what they need
with `webapp.http.access.requires`; services call `require` for checks that depend on the target.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

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
    }
)
GRANTS: dict[str, frozenset[str]] = {ADMIN: _ADMIN_GRANTS, USER: _USER_GRANTS}


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


def roles_with(permission: str) -> Iterable[str]:
    return [role for role in ROLES if f"{permission}:any" in GRANTS[role]]
