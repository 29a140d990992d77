"""Recent authentication for sensitive changes (ASVS 3.7.1; Kratos' "privileged session").

A stolen access token must not be enough to mint an API key, enrol a second factor or change the
email: those need the session to have checked a password or second factor within
`REAUTH_MAX_AGE` seconds. The moment of that check is `sessions.auth_time`, set at login (the
password step, or the MFA step when TOTP is on) and by `reauthenticate`; refreshing keeps it, so
a stolen refresh token does not renew it either.

The check reads the session row, not the token's `auth_time` claim: a reauthentication counts
for the current session at once (the client keeps its tokens), and nothing a token says can
stretch the window. It is one primary-key read, on rare requests only.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from webapp.audit import service as audit
from webapp.auth import lockout, notices, state
from webapp.auth.models import AuthSession
from webapp.config import current_settings
from webapp.context import Origin
from webapp.db import DbSession, utcnow
from webapp.errors import Forbidden, InvalidCredentials, Unauthorized, ValidationFailed
from webapp.mfa import service as mfa
from webapp.security import passwords
from webapp.users.models import User

REAUTHENTICATE_PATH = "/api/v1/auth/reauthenticate"


class ReauthenticationRequired(Forbidden):
    slug = "reauthentication-required"
    title = "Recent authentication required"


@dataclass(frozen=True)
class Reauthenticated:
    auth_time: datetime
    expires_at: datetime  # when sensitive changes need another reauthentication
    max_age: int


def ensure_recent_auth(db: DbSession, session_id: uuid.UUID | None) -> None:
    """403 `reauthentication-required` unless the session checked a password or second factor
    within `REAUTH_MAX_AGE` seconds. Only sessions qualify: an API key never does."""
    max_age = current_settings().reauth_max_age
    auth_time = None
    if session_id is not None:
        auth_time = db.scalar(select(AuthSession.auth_time).where(AuthSession.id == session_id))
    if auth_time is None or utcnow() - auth_time > timedelta(seconds=max_age):
        raise ReauthenticationRequired(
            f"This change needs a password (and second factor) check from the last {max_age} "
            f"seconds: confirm with POST {REAUTHENTICATE_PATH}, then retry.",
            extra={"max_age": max_age, "reauthenticate": REAUTHENTICATE_PATH},
        )


def reauthenticate(
    db: DbSession,
    origin: Origin,
    user_id: uuid.UUID,
    session_id: uuid.UUID | None,
    *,
    password: str,
    code: str | None = None,
    recovery_code: str | None = None,
) -> Reauthenticated:
    """Check the password, and with TOTP on a current code (or a recovery code, used up), then
    renew the session's `auth_time`. Failures count towards the lockout exactly like a login's:
    a stolen token must not become a password oracle."""
    user = db.get(User, user_id)
    session = db.get(AuthSession, session_id) if session_id is not None else None
    if user is None or session is None:
        raise Unauthorized("The session has ended.", slug="invalid-token")
    loaded_version = user.version
    lockout.ensure_not_locked(user.email, origin)
    mfa_enabled = mfa.is_enabled(db, user_id)
    if mfa_enabled and code is None and recovery_code is None:
        raise ValidationFailed(
            "Two-factor authentication is on: send a current code with the password.",
            errors={"code": ["required while two-factor authentication is on"]},
        )
    check = passwords.verify_password(user.password_hash or "", password)
    if not check.ok:
        lockout.record_failure(db, user.email, user, origin, reason="reauth_invalid_password")
        raise InvalidCredentials("The password is incorrect.")
    method = (
        check_second_factor(db, origin, user, code, recovery_code, reason_prefix="reauth_")
        if mfa_enabled
        else "password"
    )
    if check.upgraded_hash:
        user.password_hash = check.upgraded_hash
    lockout.register_success(user.email, origin)
    now = utcnow()
    session.auth_time = now
    audit.record(
        db,
        origin,
        "auth.reauthenticated",
        target_type="session",
        target_id=session.id,
        method=method,
    )
    db.commit()
    if user.version != loaded_version:
        state.publish_user(user)
    max_age = current_settings().reauth_max_age
    return Reauthenticated(now, now + timedelta(seconds=max_age), max_age)


def check_second_factor(
    db: DbSession,
    origin: Origin,
    user: User,
    code: str | None,
    recovery_code: str | None,
    *,
    reason_prefix: str = "",
) -> str:
    """The second factor of a login's MFA step or a reauthentication: a TOTP code (its time step
    consumed) or else a recovery code (used up, audited, the owner told). Returns the method; a
    wrong or replayed code counts towards the lockout and is 401 `invalid-mfa-code`."""
    if code is not None:
        method, ok = "totp", mfa.accept_code(db, user.id, code)
    else:
        method, ok = "recovery_code", mfa.use_recovery_code(db, user.id, recovery_code or "")
    if not ok:
        lockout.record_failure(
            db, user.email, user, origin, reason=f"{reason_prefix}invalid_{method}"
        )
        raise Unauthorized("The code is incorrect or was already used.", slug="invalid-mfa-code")
    if method == "recovery_code":
        record_recovery_code_use(db, origin, user)
    return method


def record_recovery_code_use(db: DbSession, origin: Origin, user: User) -> None:
    """A recovery code was just used up (at login or reauthentication): audit and tell the owner,
    who may not know their codes are out there."""
    remaining = mfa.status(db, user.id)["recovery_codes_remaining"]
    audit.record(
        db,
        origin.acting_as(user.id),
        "mfa.recovery_code_used",
        target_type="user",
        target_id=user.id,
        remaining=remaining,
    )
    notices.notify(
        db,
        origin,
        "recovery_code_used",
        recipient=user.email,
        name=user.name,
        details=[("Recovery codes left", str(remaining))],
    )
