"""Domain events derived from the audit trail: the one hook that sees every audited change.

`audit.record` calls `on_audit` for each event it adds, in the same transaction, so every path
that changes a user or a session (sign-up, the admin API, the CLI, a verification link, a
logout) emits its domain event without a line of its own. The audit action says what happened;
the rows in the caller's session (loaded or just added: no query) give the event's data.
Nothing here flushes: the caller's flush and commit errors stay where the caller handles them.
"""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from sqlalchemy import inspect

from webapp.apikeys.models import ApiKey
from webapp.audit.models import AuditEvent
from webapp.auth.models import AuthSession
from webapp.context import Origin
from webapp.db import DbSession
from webapp.events.service import emit
from webapp.users.models import User

T = TypeVar("T")

USER_FIELDS = ("email", "name", "role", "active")

_SIMPLE_USER_EVENTS = {
    "user.registered": ("user.created", {"via": "signup"}),
    "user.created": ("user.created", {"via": "admin"}),
    "auth.email_verified": ("user.email_verified", {}),
    "user.email_changed": ("user.email_changed", {}),
    "user.deleted": ("user.deleted", {}),
    "user.signup_expired": ("user.deleted", {"reason": "signup_expired"}),
    "auth.password_changed": ("user.password_changed", {"reason": "changed"}),
    "auth.password_reset": ("user.password_changed", {"reason": "reset"}),
    "mfa.enabled": ("mfa.enabled", {}),
    "mfa.disabled": ("mfa.disabled", {}),
    "mfa.reset": ("mfa.disabled", {"reason": "admin_reset"}),
}
_SESSION_REVOKED = {
    "auth.logout": "logout",
    "session.revoked": None,  # the audit details carry the reason when there is one
    "auth.session_idle_timeout": "idle_timeout",
    "auth.refresh_reuse_detected": "refresh_token_reuse",
}


def _row(db: DbSession, model: type[T], row_id: uuid.UUID) -> T | None:
    """A row of the caller's transaction: loaded, or added and not flushed yet (a new session
    is flushed only at commit), never a flush."""
    for pending in db.new:  # first: a get() of an unflushed row would query for nothing
        if isinstance(pending, model) and getattr(pending, "id", None) == row_id:
            return pending
    return db.get(model, row_id)


def user_data(user: User) -> dict[str, Any]:
    """What subscribers learn of a user: no password hash, no lockout state."""
    return {
        "email": user.email,
        "name": user.name,
        "role": user.role,
        "active": user.active,
        "email_verified": user.email_verified_at is not None,
    }


def _changed(user: User) -> list[str]:
    """The user's fields changed in this transaction and not flushed yet (the services change a
    locked row and audit before they commit)."""
    attrs = inspect(user).attrs
    return [name for name in USER_FIELDS if attrs[name].history.has_changes()]


def _deactivated(user: User) -> bool:
    history = inspect(user).attrs.active.history
    return list(history.deleted) == [True] and user.active is False


def on_audit(db: DbSession, origin: Origin, audited: AuditEvent) -> None:
    with db.no_autoflush:
        _derive(db, origin, audited)


def _derive(db: DbSession, origin: Origin, audited: AuditEvent) -> None:
    action, target, details = audited.action, audited.target_id, audited.details
    actor = {"actor_id": str(origin.actor_id) if origin.actor_id else None}
    if target is None or (action == "mfa.reset" and not details.get("had_mfa")):
        return
    if action in _SIMPLE_USER_EVENTS:
        event_type, extra = _SIMPLE_USER_EVENTS[action]
        user = _row(db, User, target)
        data = {**(user_data(user) if user is not None else {}), **extra, **actor}
        emit(db, event_type, subject=target, user_id=target, data=data)
    elif action == "user.updated":
        _user_updated(db, target, actor)
    elif action == "user.role_changed":
        data = {"old_role": details.get("old_role"), "role": details.get("role"), **actor}
        emit(db, "user.role_changed", subject=target, user_id=target, data=data)
    elif action == "auth.login_succeeded":
        session = _row(db, AuthSession, target)
        if session is not None:
            data = {"session_id": str(session.id), "remember_me": session.remember_me}
            emit(db, "session.created", subject=target, user_id=session.user_id, data=data)
    elif action in _SESSION_REVOKED:
        _session_revoked(db, target, _SESSION_REVOKED[action] or details.get("reason"), actor)
    elif action in ("api_key.created", "api_key.revoked"):
        key = _row(db, ApiKey, target)
        if key is not None:
            data = {"api_key_id": str(key.id), "name": key.name, "scopes": list(key.scopes)}
            data.update(actor, reason=details.get("reason"))
            emit(db, action, subject=target, user_id=key.user_id, data=data)


def _user_updated(db: DbSession, user_id: uuid.UUID, actor: dict[str, Any]) -> None:
    user = _row(db, User, user_id)
    if user is None:
        return
    changed = _changed(user)
    if changed:
        data = {**user_data(user), "changed": changed, **actor}
        emit(db, "user.updated", subject=user_id, user_id=user_id, data=data)
    if _deactivated(user):
        emit(db, "user.deactivated", subject=user_id, user_id=user_id, data=actor)


def _session_revoked(
    db: DbSession, session_id: uuid.UUID, reason: str | None, actor: dict[str, Any]
) -> None:
    session = _row(db, AuthSession, session_id)
    if session is None:
        return
    data = {"session_id": str(session_id), "reason": reason or session.revoked_reason, **actor}
    emit(db, "session.revoked", subject=session_id, user_id=session.user_id, data=data)
