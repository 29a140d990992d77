"""User administration rules: reading, listing, creating, updating, role changes, deletion.

Permission checks that depend on the target live here, through the RBAC policy; the route only
declares the permission the endpoint needs.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm.exc import StaleDataError

from webapp.audit import service as audit
from webapp.auth import email_change, email_tokens, sessions, state
from webapp.auth import service as auth_service
from webapp.auth.state import Principal
from webapp.context import Origin
from webapp.db import DbSession, read_only_session, utcnow
from webapp.errors import Conflict, NotFound, PreconditionFailed
from webapp.paging import Page, paginate
from webapp.security import passwords, rbac
from webapp.users.models import User, email_key
from webapp.versions import etag_value, require_match

# Advisory lock id serializing "is this the last active administrator?" checks.
_LAST_ADMIN_LOCK = int.from_bytes(b"gh-admin", "big")


def etag_of(user: User) -> str:
    return etag_value(user.id, user.version)


def get_user(db: DbSession, user_id: uuid.UUID) -> User:
    user = db.get(User, user_id)
    if user is None:
        raise NotFound("No such user.")
    return user


def list_users(
    *,
    limit: int,
    cursor: str | None = None,
    offset: int | None = None,
    sort: str | None = None,
    email: str | None = None,
    role: str | None = None,
    active: bool | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> Page:
    query = select(User)
    if email:
        escaped = email.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(func.lower(User.email).like(f"%{escaped}%", escape="\\"))
    if role:
        query = query.where(User.role == role)
    if active is not None:
        query = query.where(User.active.is_(active))
    if created_after:
        query = query.where(User.created_at >= created_after)
    if created_before:
        query = query.where(User.created_at < created_before)
    with read_only_session() as db:
        return paginate(
            db,
            query,
            id_column=User.id,
            sort_columns={"created_at": User.created_at, "email": User.email, "name": User.name},
            sort=sort,
            default_sort="-created_at",
            limit=limit,
            cursor=cursor,
            offset=offset,
        )


def create_user(
    db: DbSession,
    origin: Origin,
    *,
    email: str,
    name: str,
    password: str | None = None,
    role: str | None = None,
) -> User:
    """With a password, the account starts verified (the administrator vouches for it). Without
    one it is an invitation: no password and an unconfirmed address; its owner confirms the
    address and sets a password through the links emailed now. API keys may only invite, with
    the default role: a role or a password is human-only (`rbac.require_human`)."""
    touched = ([rbac.USERS_ROLE] if role is not None else []) + (
        [rbac.USERS_PASSWORD] if password is not None else []
    )
    rbac.require_human(origin, touched)
    role = role or rbac.USER
    if password is not None:
        auth_service.check_password_policy(password, email=email, name=name)
    auth_service.ensure_email_free(db, email, origin=origin)
    user = User(
        email=email.strip(),
        name=name.strip(),
        role=role,
        password_hash=passwords.hash_password(password) if password is not None else None,
        email_verified_at=utcnow() if password is not None else None,
    )
    db.add(user)
    db.flush()
    if password is not None:
        email_tokens.queue_welcome_email(db, origin, user)
    else:
        email_tokens.queue_verification_email(db, origin, user)
        email_tokens.queue_password_reset_email(db, origin, user)
    audit.record(
        db,
        origin,
        "user.created",
        target_type="user",
        target_id=user.id,
        role=role,
        invited=True if password is None else None,
    )
    auth_service.commit_unique(db)
    return user


def _locked_for_write(db: DbSession, user_id: uuid.UUID, if_match: str | None) -> User:
    user = db.scalar(select(User).where(User.id == user_id).with_for_update())
    if user is None:
        raise NotFound("No such user.")
    require_match(if_match, etag_of(user))
    return user


def _ensure_admin_remains(db: DbSession, user: User, *, new_role: str | None, active: bool) -> None:
    """Refuse to demote, disable or delete the last active administrator.

    An inactive administrator is not counted, so removing one never reduces the count. Removals
    are serialized by a transaction-scoped advisory lock (PostgreSQL), so two administrators
    demoting each other at once cannot both see the other still counted."""
    if user.role != rbac.ADMIN or not user.active or (new_role == rbac.ADMIN and active):
        return
    if db.get_bind().dialect.name == "postgresql":
        db.execute(select(func.pg_advisory_xact_lock(_LAST_ADMIN_LOCK)))
    admins = db.scalar(
        select(func.count()).select_from(User).where(User.role == rbac.ADMIN, User.active.is_(True))
    )
    if (admins or 0) <= 1:
        raise Conflict("The last active administrator cannot be removed.", slug="last-admin")


def _commit(db: DbSession) -> None:
    try:
        auth_service.commit_unique(db)
    except StaleDataError:
        db.rollback()
        raise PreconditionFailed("The user changed concurrently; read it again.") from None


def _deactivated(db: DbSession, origin: Origin, user: User) -> None:
    sessions.revoke_all_sessions(db, origin, user.id, keep=None, reason="user_deactivated")


def update_user(
    db: DbSession,
    origin: Origin,
    principal: Principal,
    user_id: uuid.UUID,
    changes: dict[str, Any],
    *,
    if_match: str | None = None,
) -> User:
    """PATCH: the owner may change their name; `active` needs the admin-level permission, and
    re-enabling a disabled account is human-only."""
    if "active" in changes:
        rbac.require(principal.role, principal.user_id, "users:update", owner_id=None)
    user = _locked_for_write(db, user_id, if_match)
    if changes.get("active") is True and not user.active:
        rbac.require_human(origin, [rbac.USERS_REACTIVATE])
    if "active" in changes and changes["active"] is False and user.active:
        _ensure_admin_remains(db, user, new_role=user.role, active=False)
        _deactivated(db, origin, user)
    for field in ("name", "active"):
        if field in changes:
            setattr(user, field, changes[field])
    if changes:
        audit.record(
            db,
            origin,
            "user.updated",
            target_type="user",
            target_id=user.id,
            fields=sorted(changes),
        )
    _commit(db)
    sessions.publish_pending_revocations(db)
    state.publish_user(user)
    return user


def replace_user(
    db: DbSession,
    origin: Origin,
    user_id: uuid.UUID,
    body: dict[str, Any],
    *,
    if_match: str | None = None,
) -> User:
    """PUT (administrators): the full editable representation. Through an API key only the
    name and deactivation: role, email and reactivation are human-only. A new address is not
    applied here: like a self-service change, it becomes the login once its owner confirms the
    link mailed to it (a typo cannot lock the user out, nor hand the account to the typo's owner
    without their click). Only the same address in another case or look-alike form (the same
    account key) is applied at once."""
    user = _locked_for_write(db, user_id, if_match)
    new_email = body["email"].strip()
    touched = [
        permission
        for permission, changed in (
            (rbac.USERS_ROLE, body["role"] != user.role),
            (rbac.USERS_EMAIL, new_email != user.email),
            (rbac.USERS_REACTIVATE, body["active"] and not user.active),
        )
        if changed
    ]
    rbac.require_human(origin, touched)
    auth_service.ensure_email_free(db, new_email, except_id=user.id, origin=origin)
    _ensure_admin_remains(db, user, new_role=body["role"], active=body["active"])
    if user.active and not body["active"]:
        _deactivated(db, origin, user)
    old_role = user.role
    if email_key(new_email) == user.email_normalized:
        user.email = new_email
    else:
        email_change.start(db, origin, user, new_email)
    user.name = body["name"].strip()
    user.role, user.active = body["role"], body["active"]
    audit.record(
        db, origin, "user.updated", target_type="user", target_id=user.id, fields=sorted(body)
    )
    if old_role != user.role:
        audit.record(
            db,
            origin,
            "user.role_changed",
            target_type="user",
            target_id=user.id,
            old_role=old_role,
            role=user.role,
        )
    _commit(db)
    sessions.publish_pending_revocations(db)
    state.publish_user(user)
    return user


def change_role(
    db: DbSession, origin: Origin, user_id: uuid.UUID, role: str, *, if_match: str | None = None
) -> User:
    # The route is bearer-only already; the policy is asked anyway, so no other path can lose it.
    rbac.require_human(origin, [rbac.USERS_ROLE])
    user = _locked_for_write(db, user_id, if_match)
    if user.role != role:
        _ensure_admin_remains(db, user, new_role=role, active=user.active)
        audit.record(
            db,
            origin,
            "user.role_changed",
            target_type="user",
            target_id=user.id,
            old_role=user.role,
            role=role,
        )
        user.role = role
    _commit(db)
    state.publish_user(user)
    return user


def delete_user(
    db: DbSession, origin: Origin, user_id: uuid.UUID, *, if_match: str | None = None
) -> None:
    """Delete the account and its sessions; its audit history stays (ids, no cascade)."""
    user = _locked_for_write(db, user_id, if_match)
    _ensure_admin_remains(db, user, new_role=None, active=False)
    session_ids = [s.id for s in sessions.list_sessions(db, user.id)]
    audit.record(db, origin, "user.deleted", target_type="user", target_id=user.id)
    db.delete(user)
    _commit(db)
    state.forget_user(user_id)
    state.publish_sessions_revoked(session_ids)
