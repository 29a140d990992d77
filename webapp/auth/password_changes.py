"""Password changes: reset by emailed link, and change by the signed-in user."""

from __future__ import annotations

import uuid

from webapp.apikeys import revocation as apikeys
from webapp.audit import service as audit
from webapp.auth import email_tokens, lockout, notices, signups, state
from webapp.auth.service import check_password_policy, find_user_by_email
from webapp.auth.sessions import publish_pending_revocations, revoke_all_sessions
from webapp.context import Origin
from webapp.db import DbSession
from webapp.errors import ValidationFailed
from webapp.security import passwords
from webapp.users.models import User


def request_password_reset(db: DbSession, origin: Origin, email: str) -> None:
    """Always the same outcome for the caller; an email only goes to an existing, active account."""
    user = find_user_by_email(db, email)
    if user is not None and user.active and not signups.is_expired_signup(db, user):
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


def _same_password() -> ValidationFailed:
    return ValidationFailed(
        "The new password must differ from the current one.",
        errors={"password": ["must differ from the current password"]},
    )


def set_password(user: User, password: str, *, field: str = "password") -> None:
    check_password_policy(password, email=user.email, name=user.name, field=field)
    user.password_hash = passwords.hash_password(password)


def confirm_password_reset(
    db: DbSession, origin: Origin, token: str, password: str
) -> dict[str, int]:
    """Set the new password and end everything that authenticated as the account: every session
    and every API key (an attacker's footholds must not survive the owner's recovery). Returns
    the counts, which the owner's notice repeats. A deactivated account's link is refused like an
    unknown one: a reset must neither give it a password nor clear its lockout (only an
    administrator reactivates an account)."""
    row = email_tokens.consume(db, token, email_tokens.PASSWORD_RESET)
    user = db.get(User, row.user_id)
    assert user is not None
    if not user.active:
        raise email_tokens.invalid_token()
    if user.password_hash and passwords.verify_password(user.password_hash, password).ok:
        # The link is used up all the same: otherwise it would answer "is this the current
        # password?" for as long as it lives. Whoever knows it can simply sign in.
        db.commit()
        raise _same_password()
    set_password(user, password)
    lockout.clear_account(user.email, origin)
    # Other outstanding reset links die with this one.
    email_tokens.invalidate(db, user.id, email_tokens.PASSWORD_RESET)
    return _end_other_access(
        db, origin.acting_as(user.id), user, "password_reset", keep=None, revoke_api_keys=True
    )


def _end_other_access(
    db: DbSession,
    origin: Origin,
    user: User,
    event: str,
    *,
    keep: uuid.UUID | None,
    revoke_api_keys: bool,
) -> dict[str, int]:
    """After a new password: end the sessions (but `keep`) and, when asked, the API keys; audit
    `auth.<event>`, tell the owner, commit, and let the caches know. Returns the counts."""
    sessions_revoked = revoke_all_sessions(db, origin, user.id, keep=keep, reason=event)
    keys = apikeys.revoke_all_keys(db, origin, user.id, reason=event) if revoke_api_keys else []
    counts = {"sessions_revoked": sessions_revoked, "api_keys_revoked": len(keys)}
    audit.record(db, origin, f"auth.{event}", target_type="user", target_id=user.id, **counts)
    notices.notify(
        db,
        origin,
        event,
        recipient=user.email,
        name=user.name,
        details=[
            ("Sessions signed out", str(sessions_revoked)),
            ("API keys revoked", str(len(keys))),
        ],
    )
    db.commit()
    publish_pending_revocations(db)
    apikeys.publish_keys(keys)
    state.publish_user(user)
    return counts


def change_password(
    db: DbSession,
    origin: Origin,
    user_id: uuid.UUID,
    current_session: uuid.UUID | None,
    *,
    current_password: str,
    new_password: str,
    revoke_api_keys: bool = False,
) -> None:
    """Other sessions end (the current one stays signed in); API keys only when asked, since
    machines that use them would break. The owner is emailed either way."""
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
    if new_password == current_password:
        raise ValidationFailed(
            "The new password must differ from the current one.",
            errors={"new_password": ["must differ from the current password"]},
        )
    set_password(user, new_password, field="new_password")
    lockout.register_success(user.email, origin)
    _end_other_access(
        db,
        origin,
        user,
        "password_changed",
        keep=current_session,
        revoke_api_keys=revoke_api_keys,
    )
