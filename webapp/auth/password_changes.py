"""Password changes: reset by emailed link, and change by the signed-in user."""

from __future__ import annotations

import uuid

from sqlalchemy import update

from webapp.audit import service as audit
from webapp.auth import email_tokens, lockout, state
from webapp.auth.models import OneTimeToken
from webapp.auth.service import check_password_policy, find_user_by_email
from webapp.auth.sessions import publish_pending_revocations, revoke_all_sessions
from webapp.context import Origin
from webapp.db import DbSession, utcnow
from webapp.errors import ValidationFailed
from webapp.security import passwords
from webapp.users.models import User


def request_password_reset(db: DbSession, origin: Origin, email: str) -> None:
    """Always the same outcome for the caller; an email only goes to an existing, active account."""
    user = find_user_by_email(db, email)
    if user is not None and user.active:
        email_tokens.queue_password_reset_email(db, origin, user)
    # Audited either way: similar work on both paths, and enumeration attempts leave a trace.
    audit.record(
        db,
        origin,
        "auth.password_reset_requested",
        target_type="user" if user else None,
        target_id=user.id if user else None,
    )
    db.commit()


def set_password(user: User, password: str, *, field: str = "password") -> None:
    check_password_policy(password, email=user.email, name=user.name, field=field)
    user.password_hash = passwords.hash_password(password)


def confirm_password_reset(db: DbSession, origin: Origin, token: str, password: str) -> None:
    row = email_tokens.consume(db, token, email_tokens.PASSWORD_RESET)
    user = db.get(User, row.user_id)
    assert user is not None
    set_password(user, password)
    lockout.clear_account(user.email, origin)
    actor = origin.acting_as(user.id)
    revoke_all_sessions(db, actor, user.id, keep=None, reason="password_reset")
    # Other outstanding reset links die with this one.
    db.execute(
        update(OneTimeToken)
        .where(
            OneTimeToken.user_id == user.id,
            OneTimeToken.purpose == email_tokens.PASSWORD_RESET,
            OneTimeToken.used_at.is_(None),
        )
        .values(used_at=utcnow())
    )
    audit.record(db, actor, "auth.password_reset", target_type="user", target_id=user.id)
    db.commit()
    publish_pending_revocations(db)
    state.publish_user(user)


def change_password(
    db: DbSession,
    origin: Origin,
    user_id: uuid.UUID,
    current_session: uuid.UUID | None,
    *,
    current_password: str,
    new_password: str,
) -> None:
    user = db.get(User, user_id)
    assert user is not None
    # A stolen access token must not become an unlimited password oracle: wrong current
    # passwords count towards the same lockout as failed logins.
    lockout.ensure_not_locked(user.email, origin)
    check = passwords.verify_password(user.password_hash or "", current_password)
    if not check.ok:
        lockout.record_failure(db, user.email, user, origin, reason="wrong_current_password")
        raise ValidationFailed(
            "The current password is incorrect.",
            slug="invalid-current-password",
            errors={"current_password": ["is incorrect"]},
        )
    set_password(user, new_password, field="new_password")
    lockout.register_success(user.email, origin)
    revoke_all_sessions(db, origin, user.id, keep=current_session, reason="password_changed")
    audit.record(db, origin, "auth.password_changed", target_type="user", target_id=user.id)
    db.commit()
    publish_pending_revocations(db)
    state.publish_user(user)
