"""The authentication rules: registration, email verification, login, token rotation, sessions.

Plain functions over a database session; each use case commits its own unit of work (the
change, its audit events and its outbox messages together) and refreshes the auth cache after
the commit. Nothing here reads Flask's request: callers pass an `Origin`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from observability import metrics
from webapp.audit import service as audit
from webapp.auth import lockout, state
from webapp.auth.models import AuthSession, OneTimeToken, RefreshToken
from webapp.auth.tokens import format_refresh_token, issue_access_token, parse_refresh_token
from webapp.config import current_settings
from webapp.context import Origin
from webapp.db import DbSession, utcnow
from webapp.errors import (
    AccountLocked,
    Conflict,
    EmailUnverified,
    InvalidCredentials,
    Unauthorized,
    ValidationFailed,
)
from webapp.mfa import service as mfa
from webapp.outbox import service as outbox
from webapp.security import passwords
from webapp.security.password_policy import password_problems
from webapp.security.secrets import hash_token, new_token
from webapp.users.models import User

VERIFY_EMAIL, PASSWORD_RESET = "verify_email", "password_reset"
MFA_LOGIN = "mfa_login"


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"  # noqa: S105 - the OAuth token type, not a secret


@dataclass(frozen=True)
class MfaChallenge:
    """A correct password for an account with a second factor: finish at /auth/login/mfa."""

    mfa_token: str
    expires_in: int
    mfa_required: bool = True


def find_user_by_email(db: DbSession, email: str) -> User | None:
    return db.scalar(select(User).where(func.lower(User.email) == email.strip().lower()))


def check_password_policy(
    password: str, *, email: str, name: str | None = None, field: str = "password"
) -> None:
    """422 naming `field`, the request field that carried the password, when the policy fails."""
    problems = password_problems(password, email=email, name=name)
    if problems:
        raise ValidationFailed("The password does not meet the policy.", errors={field: problems})


def ensure_email_free(db: DbSession, email: str, *, except_id: uuid.UUID | None = None) -> None:
    existing = find_user_by_email(db, email)
    if existing is not None and existing.id != except_id:
        raise Conflict("An account with this email already exists.", slug="email-taken")


def commit_unique(db: DbSession) -> None:
    """Commit; a unique-email race lost to a concurrent request is the same 409."""
    try:
        db.commit()
    except IntegrityError:
        db.rollback()
        raise Conflict("An account with this email already exists.", slug="email-taken") from None


def _issue_one_time_token(
    db: DbSession, user: User, purpose: str, ttl: int
) -> tuple[str, OneTimeToken]:
    plaintext, digest = new_token()
    row = OneTimeToken(
        user_id=user.id,
        purpose=purpose,
        token_hash=digest,
        expires_at=utcnow() + timedelta(seconds=ttl),
    )
    db.add(row)
    db.flush()
    return plaintext, row


def _link(path: str, token: str) -> str:
    return f"{current_settings().public_base_url}{path}?token={token}"


def queue_verification_email(db: DbSession, origin: Origin, user: User) -> None:
    settings = current_settings()
    token, row = _issue_one_time_token(db, user, VERIFY_EMAIL, settings.email_token_ttl)
    outbox.enqueue(
        db,
        origin,
        template="verify_email",
        recipient=user.email,
        idempotency_key=f"verify_email:{row.id}",
        payload={
            "name": user.name,
            "token": token,
            "link": _link("/verify-email", token),
            "expires_at": row.expires_at.isoformat(),
        },
    )


def queue_welcome_email(db: DbSession, origin: Origin, user: User) -> None:
    outbox.enqueue(
        db,
        origin,
        template="welcome",
        recipient=user.email,
        idempotency_key=f"welcome:{user.id}",
        payload={"name": user.name, "link": current_settings().public_base_url},
    )


def register(db: DbSession, origin: Origin, *, email: str, password: str, name: str) -> User:
    email = email.strip()
    check_password_policy(password, email=email, name=name)
    ensure_email_free(db, email)
    user = User(email=email, name=name.strip(), password_hash=passwords.hash_password(password))
    db.add(user)
    db.flush()
    queue_verification_email(db, origin, user)
    audit.record(
        db, origin.acting_as(user.id), "user.registered", target_type="user", target_id=user.id
    )
    commit_unique(db)
    metrics.REGISTRATIONS.inc()
    return user


def _consume_token(db: DbSession, plaintext: str, purpose: str) -> OneTimeToken:
    row = db.scalar(
        select(OneTimeToken)
        .where(OneTimeToken.token_hash == hash_token(plaintext), OneTimeToken.purpose == purpose)
        .with_for_update()
    )
    if row is None or row.used_at is not None or row.expires_at <= utcnow():
        raise ValidationFailed(
            "The token is invalid, expired or already used.",
            slug="invalid-token",
            errors={"token": ["invalid, expired or already used"]},
        )
    row.used_at = utcnow()
    return row


def verify_email(db: DbSession, origin: Origin, token: str) -> User:
    row = _consume_token(db, token, VERIFY_EMAIL)
    user = db.get(User, row.user_id)
    assert user is not None  # tokens cascade with their user
    if user.email_verified_at is None:
        user.email_verified_at = utcnow()
        queue_welcome_email(db, origin, user)
        audit.record(
            db,
            origin.acting_as(user.id),
            "auth.email_verified",
            target_type="user",
            target_id=user.id,
        )
    db.commit()
    state.publish_user(user)
    return user


def _stored_user_agent(origin: Origin) -> str | None:
    """The User-Agent as a session row keeps it (the column holds 512 characters)."""
    return (origin.user_agent or "")[:512] or None


def _start_session(db: DbSession, origin: Origin, user: User) -> tuple[AuthSession, RefreshToken]:
    settings = current_settings()
    session = AuthSession(
        user_id=user.id,
        expires_at=utcnow() + timedelta(seconds=settings.refresh_token_ttl),
        ip=origin.ip,
        user_agent=_stored_user_agent(origin),
    )
    db.add(session)
    db.flush()
    refresh = RefreshToken(session_id=session.id)
    db.add(refresh)
    db.flush()
    return session, refresh


def _pair(user: User | dict[str, str], session_id: uuid.UUID, refresh_id: uuid.UUID) -> TokenPair:
    user_id = user.id if isinstance(user, User) else uuid.UUID(user["id"])
    role = user.role if isinstance(user, User) else user["role"]
    return TokenPair(
        access_token=issue_access_token(user_id, role, session_id),
        refresh_token=format_refresh_token(refresh_id),
        expires_in=current_settings().access_token_ttl,
    )


def _is_new_device(db: DbSession, user: User, origin: Origin) -> bool:
    """A login from an IP and client this user has not signed in from before."""
    # Two indexed existence checks, however many sessions the account has had.
    mine = select(AuthSession.id).where(AuthSession.user_id == user.id)
    if db.scalar(mine.limit(1)) is None:
        return False  # the first sign-in of an account is not news to its owner
    # Compare with the stored (truncated) form, or a long User-Agent would look new every time.
    agent = _stored_user_agent(origin)
    seen = mine.where(
        AuthSession.ip.is_(None) if origin.ip is None else AuthSession.ip == origin.ip,
        AuthSession.user_agent.is_(None) if agent is None else AuthSession.user_agent == agent,
    )
    return db.scalar(seen.limit(1)) is None


def login(db: DbSession, origin: Origin, *, email: str, password: str) -> TokenPair | MfaChallenge:
    """Lockout (429), then credentials (401), then verified email (403), then tokens — or, with
    TOTP active, a short-lived single-use `mfa_token` for the second step."""
    user = find_user_by_email(db, email)
    try:
        lockout.ensure_not_locked(user, origin)
    except AccountLocked:
        metrics.LOGINS.labels(result="locked").inc()
        raise

    if user is None or user.password_hash is None or not user.active:
        passwords.equalize_timing(password)
        check = passwords.PasswordCheck(ok=False, upgraded_hash=None)
    else:
        check = passwords.verify_password(user.password_hash, password)
    if not check.ok:
        lockout.register_failure(db, user, origin)
        audit.record(
            db,
            origin,
            "auth.login_failed",
            target_type="user" if user else None,
            target_id=user.id if user else None,
            reason="invalid_credentials",
        )
        db.commit()
        if user is not None:
            state.publish_user(user)
        metrics.LOGINS.labels(result="invalid_credentials").inc()
        raise InvalidCredentials("The email or password is incorrect.")
    assert user is not None

    settings = current_settings()
    if settings.require_email_verification and user.email_verified_at is None:
        metrics.LOGINS.labels(result="unverified").inc()
        raise EmailUnverified("Verify your email address before signing in.")

    if check.upgraded_hash:
        user.password_hash = check.upgraded_hash
    if mfa.is_enabled(db, user.id):
        # The failure counter is not reset here: a known password must not buy an attacker a
        # fresh round of second-factor guesses.
        token, _ = _issue_one_time_token(db, user, MFA_LOGIN, settings.mfa_token_ttl)
        db.commit()
        metrics.LOGINS.labels(result="mfa_required").inc()
        return MfaChallenge(mfa_token=token, expires_in=settings.mfa_token_ttl)
    return _complete_login(db, origin, user)


def _complete_login(db: DbSession, origin: Origin, user: User, **details: str) -> TokenPair:
    """Both kinds of login end here: a session, the new-device email, the audit event."""
    settings = current_settings()
    lockout.register_success(user)
    new_device = _is_new_device(db, user, origin)
    session, refresh = _start_session(db, origin, user)
    if new_device:
        outbox.enqueue(
            db,
            origin,
            template="new_login",
            recipient=user.email,
            idempotency_key=f"new_login:{session.id}",
            payload={
                "name": user.name,
                "ip": origin.ip,
                "user_agent": origin.user_agent,
                "at": session.created_at.isoformat(),
                "link": f"{settings.public_base_url}/sessions",
            },
        )
    audit.record(
        db,
        origin.acting_as(user.id),
        "auth.login_succeeded",
        target_type="session",
        target_id=session.id,
        **details,
    )
    db.commit()
    state.publish_user(user)
    metrics.LOGINS.labels(result="success").inc()
    return _pair(user, session.id, refresh.id)


def _invalid_mfa_token() -> Unauthorized:
    metrics.LOGINS.labels(result="invalid_mfa_token").inc()
    return Unauthorized(
        "The MFA token is invalid, expired or already used; sign in again.",
        slug="invalid-mfa-token",
    )


def complete_mfa_login(
    db: DbSession,
    origin: Origin,
    *,
    mfa_token: str,
    code: str | None = None,
    recovery_code: str | None = None,
) -> TokenPair:
    """The second step: a TOTP code (its time step consumed) or a recovery code (used up).
    Wrong codes count towards the account and IP lockout; the token survives them until it
    expires, is used, or the account locks."""
    row = db.scalar(
        select(OneTimeToken)
        .where(OneTimeToken.token_hash == hash_token(mfa_token), OneTimeToken.purpose == MFA_LOGIN)
        .with_for_update()
    )
    if row is None or row.used_at is not None or row.expires_at <= utcnow():
        raise _invalid_mfa_token()
    user = db.get(User, row.user_id)
    if user is None or not user.active:
        raise _invalid_mfa_token()
    try:
        lockout.ensure_not_locked(user, origin)
    except AccountLocked:
        metrics.LOGINS.labels(result="locked").inc()
        raise
    if code is not None:
        method, ok = "totp", mfa.accept_code(db, user.id, code)
    else:
        method, ok = "recovery_code", mfa.use_recovery_code(db, user.id, recovery_code or "")
    if not ok:
        lockout.register_failure(db, user, origin)
        audit.record(
            db,
            origin,
            "auth.login_failed",
            target_type="user",
            target_id=user.id,
            reason=f"invalid_{method}",
        )
        db.commit()
        state.publish_user(user)
        metrics.LOGINS.labels(result="invalid_mfa_code").inc()
        raise Unauthorized("The code is incorrect or was already used.", slug="invalid-mfa-code")
    row.used_at = utcnow()
    if method == "recovery_code":
        audit.record(
            db,
            origin.acting_as(user.id),
            "mfa.recovery_code_used",
            target_type="user",
            target_id=user.id,
            remaining=mfa.status(db, user.id)["recovery_codes_remaining"],
        )
    return _complete_login(db, origin, user, mfa=method)


def _revoke(db: DbSession, sessions: list[AuthSession], reason: str) -> list[uuid.UUID]:
    now = utcnow()
    revoked = []
    for session in sessions:
        if session.revoked_at is None:
            session.revoked_at = now
            session.revoked_reason = reason
            revoked.append(session.id)
    return revoked


def _invalid_refresh() -> Unauthorized:
    metrics.TOKEN_REFRESHES.labels(result="invalid").inc()
    return Unauthorized("The refresh token is invalid or expired.", slug="invalid-refresh-token")


def refresh(db: DbSession, origin: Origin, refresh_token: str) -> TokenPair:
    """Rotate a refresh token. A token used twice revokes its whole session (reuse detection),
    except inside `REFRESH_REUSE_GRACE`, where the same successor is handed out again."""
    token_id = parse_refresh_token(refresh_token)
    if token_id is None:
        raise _invalid_refresh()
    token = db.scalar(select(RefreshToken).where(RefreshToken.id == token_id).with_for_update())
    session = db.get(AuthSession, token.session_id) if token else None
    if token is None or session is None or not session.active:
        raise _invalid_refresh()
    user = db.get(User, session.user_id)
    if user is None or not user.active:
        raise _invalid_refresh()

    now = utcnow()
    if token.used_at is not None:
        grace = current_settings().refresh_reuse_grace
        if grace and token.successor_id and (now - token.used_at).total_seconds() <= grace:
            db.commit()
            metrics.TOKEN_REFRESHES.labels(result="grace").inc()
            return _pair(user, session.id, token.successor_id)
        revoked = _revoke(db, [session], "refresh_token_reuse")
        audit.record(
            db,
            origin.acting_as(user.id),
            "auth.refresh_reuse_detected",
            target_type="session",
            target_id=session.id,
        )
        db.commit()
        state.publish_sessions_revoked(revoked)
        metrics.TOKEN_REFRESHES.labels(result="reuse_detected").inc()
        raise Unauthorized(
            "This refresh token was already used; the session has been revoked.",
            slug="refresh-token-reused",
        )

    successor = RefreshToken(session_id=session.id)
    db.add(successor)
    db.flush()
    token.used_at = now
    token.successor_id = successor.id
    session.last_used_at = now
    db.commit()
    metrics.TOKEN_REFRESHES.labels(result="success").inc()
    return _pair(user, session.id, successor.id)


def logout(db: DbSession, origin: Origin, session_id: uuid.UUID) -> None:
    session = db.get(AuthSession, session_id)
    if session is None:
        return
    revoked = _revoke(db, [session], "logout")
    audit.record(db, origin, "auth.logout", target_type="session", target_id=session_id)
    db.commit()
    state.publish_sessions_revoked(revoked)


def list_sessions(db: DbSession, user_id: uuid.UUID) -> list[AuthSession]:
    query = (
        select(AuthSession)
        .where(
            AuthSession.user_id == user_id,
            AuthSession.revoked_at.is_(None),
            AuthSession.expires_at > utcnow(),
        )
        .order_by(AuthSession.created_at.desc(), AuthSession.id.desc())
    )
    return list(db.scalars(query))


def revoke_session(
    db: DbSession, origin: Origin, user_id: uuid.UUID, session_id: uuid.UUID
) -> None:
    session = db.get(AuthSession, session_id)
    if session is None or session.user_id != user_id or not session.active:
        from webapp.errors import NotFound

        raise NotFound("No such active session.")
    revoked = _revoke(db, [session], "revoked_by_user")
    audit.record(db, origin, "session.revoked", target_type="session", target_id=session_id)
    db.commit()
    state.publish_sessions_revoked(revoked)


def revoke_all_sessions(
    db: DbSession, origin: Origin, user_id: uuid.UUID, *, keep: uuid.UUID | None, reason: str
) -> int:
    """Revoke every live session of a user except `keep`; the caller commits."""
    sessions = [s for s in list_sessions(db, user_id) if s.id != keep]
    revoked = _revoke(db, sessions, reason)
    for session_id in revoked:
        audit.record(
            db,
            origin,
            "session.revoked",
            target_type="session",
            target_id=session_id,
            reason=reason,
        )
    db.info.setdefault("revoked_sessions", []).extend(revoked)
    return len(revoked)


def publish_pending_revocations(db: DbSession) -> None:
    """After commit: tell the auth cache about sessions revoked in this unit of work."""
    revoked = db.info.pop("revoked_sessions", [])
    state.publish_sessions_revoked(revoked)


def revoke_other_sessions(
    db: DbSession, origin: Origin, user_id: uuid.UUID, current: uuid.UUID | None
) -> int:
    count = revoke_all_sessions(db, origin, user_id, keep=current, reason="revoked_by_user")
    db.commit()
    publish_pending_revocations(db)
    return count


def request_password_reset(db: DbSession, origin: Origin, email: str) -> None:
    """Always the same outcome for the caller; an email only goes to an existing, active account."""
    user = find_user_by_email(db, email)
    if user is not None and user.active:
        settings = current_settings()
        token, row = _issue_one_time_token(db, user, PASSWORD_RESET, settings.password_reset_ttl)
        outbox.enqueue(
            db,
            origin,
            template="password_reset",
            recipient=user.email,
            idempotency_key=f"password_reset:{row.id}",
            payload={
                "name": user.name,
                "token": token,
                "link": _link("/reset-password", token),
                "expires_at": row.expires_at.isoformat(),
            },
        )
    # Audited either way: similar work on both paths, and enumeration attempts leave a trace.
    audit.record(
        db,
        origin,
        "auth.password_reset_requested",
        target_type="user" if user else None,
        target_id=user.id if user else None,
    )
    db.commit()


def _set_password(user: User, password: str, *, field: str = "password") -> None:
    check_password_policy(password, email=user.email, name=user.name, field=field)
    user.password_hash = passwords.hash_password(password)
    lockout.register_success(user)


def confirm_password_reset(db: DbSession, origin: Origin, token: str, password: str) -> None:
    row = _consume_token(db, token, PASSWORD_RESET)
    user = db.get(User, row.user_id)
    assert user is not None
    _set_password(user, password)
    actor = origin.acting_as(user.id)
    revoke_all_sessions(db, actor, user.id, keep=None, reason="password_reset")
    # Other outstanding reset links die with this one.
    db.execute(
        update(OneTimeToken)
        .where(
            OneTimeToken.user_id == user.id,
            OneTimeToken.purpose == PASSWORD_RESET,
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
    lockout.ensure_not_locked(user, origin)
    check = passwords.verify_password(user.password_hash or "", current_password)
    if not check.ok:
        lockout.register_failure(db, user, origin)
        audit.record(
            db,
            origin,
            "auth.login_failed",
            target_type="user",
            target_id=user.id,
            reason="wrong_current_password",
        )
        db.commit()
        state.publish_user(user)
        raise ValidationFailed(
            "The current password is incorrect.",
            slug="invalid-current-password",
            errors={"current_password": ["is incorrect"]},
        )
    _set_password(user, new_password, field="new_password")
    revoke_all_sessions(db, origin, user.id, keep=current_session, reason="password_changed")
    audit.record(db, origin, "auth.password_changed", target_type="user", target_id=user.id)
    db.commit()
    publish_pending_revocations(db)
    state.publish_user(user)
