"""The authentication rules: registration, email verification, login (with its second factor)
and refresh-token rotation. Sessions live in `sessions`, password changes in `password_changes`.

Plain functions over a database session; each use case commits its own unit of work (the
change, its audit events and its outbox messages together) and refreshes the auth cache after
the commit. Nothing here reads Flask's request: callers pass an `Origin`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Exists, Select, String, bindparam, select
from sqlalchemy.exc import IntegrityError

from observability import metrics
from webapp.audit import service as audit
from webapp.auth import email_tokens, lockout, reauth, rotation, sessions, signups, state
from webapp.auth.models import AuthSession
from webapp.auth.signups import email_taken
from webapp.auth.signups import ensure_email_free as ensure_email_free
from webapp.auth.signups import find_user_by_email as find_user_by_email
from webapp.auth.tokens import format_refresh_token, issue_access_token
from webapp.config import current_settings
from webapp.context import Origin
from webapp.db import DbSession, utcnow
from webapp.errors import (
    EmailUnverified,
    InvalidCredentials,
    TooManyRequests,
    Unauthorized,
    ValidationFailed,
)
from webapp.mfa import service as mfa
from webapp.outbox import service as outbox
from webapp.security import passwords
from webapp.security.password_policy import password_problems
from webapp.users.models import User, email_key


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


def check_password_policy(
    password: str, *, email: str, name: str | None = None, field: str = "password"
) -> None:
    """422 naming `field`, the request field that carried the password, when the policy fails."""
    problems = password_problems(password, email=email, name=name)
    if problems:
        raise ValidationFailed("The password does not meet the policy.", errors={field: problems})


def commit_unique(db: DbSession) -> None:
    """Commit; a unique-email race lost to a concurrent request is the same 409."""
    try:
        db.commit()
    except IntegrityError:
        db.rollback()
        raise email_taken() from None


def register(db: DbSession, origin: Origin, *, email: str, password: str, name: str) -> User:
    """A new, unverified account. An expired sign-up holding the address (or a look-alike of
    it) is removed in the same transaction, so a squatter cannot keep an address."""
    email = email.strip()
    check_password_policy(password, email=email, name=name)
    ensure_email_free(db, email, origin=origin)
    user = User(email=email, name=name.strip(), password_hash=passwords.hash_password(password))
    db.add(user)
    db.flush()
    email_tokens.queue_verification_email(db, origin, user)
    audit.record(
        db, origin.acting_as(user.id), "user.registered", target_type="user", target_id=user.id
    )
    commit_unique(db)
    metrics.REGISTRATIONS.inc()
    return user


def _pair(user: User, session: AuthSession, refresh_id: uuid.UUID) -> TokenPair:
    return TokenPair(
        access_token=issue_access_token(user.id, user.role, session.id, session.auth_time),
        refresh_token=format_refresh_token(refresh_id),
        expires_in=current_settings().access_token_ttl,
    )


def _device_checks(user_id: Any, origin: Origin) -> tuple[Exists, Exists]:
    """(has signed in before, has signed in from this IP and client before) for `user_id`, a
    value or a correlated column: two indexed existence checks however many sessions it has."""
    mine = select(AuthSession.id).where(AuthSession.user_id == user_id)
    # Compare with the stored (truncated) form, or a long User-Agent would look new every time.
    agent = sessions.stored_user_agent(origin)
    seen = mine.where(
        AuthSession.ip.is_(None) if origin.ip is None else AuthSession.ip == origin.ip,
        AuthSession.user_agent.is_(None) if agent is None else AuthSession.user_agent == agent,
    )
    return mine.exists(), seen.exists()


@dataclass(frozen=True)
class _LoginCandidate:
    user: User | None
    mfa_enabled: bool = False
    new_device: bool = False
    known_device: bool = False


def _login_candidate_statement() -> Select[User, bool, bool, bool]:
    mine = select(AuthSession.id).where(AuthSession.user_id == User.id)
    # Compared with the stored (truncated) User-Agent, or a long one would look new every time.
    seen_here = mine.where(
        AuthSession.ip.is_not_distinct_from(bindparam("ip", type_=String)),
        AuthSession.user_agent.is_not_distinct_from(bindparam("agent", type_=String)),
    )
    return select(User, mfa.enabled_check(User.id), mine.exists(), seen_here.exists()).where(
        User.email_normalized == bindparam("email_key", type_=String)
    )


# Built once: a statement object keeps its SQL cache key, and building this one for every login
# cost ~150 µs of CPU.
_LOGIN_CANDIDATE = _login_candidate_statement()


def _find_login_candidate(db: DbSession, email: str, origin: Origin) -> _LoginCandidate:
    """The account, whether it has a second factor, whether this device is new to it: one round
    trip, read before the hash (the checks cost next to nothing beside it)."""
    row = db.execute(
        _LOGIN_CANDIDATE,
        {
            "email_key": email_key(email),
            "ip": origin.ip,
            "agent": sessions.stored_user_agent(origin),
        },
    ).one_or_none()
    if row is None:
        return _LoginCandidate(user=None)
    user, mfa_enabled, before, here = row
    if signups.expired(user, signed_in_before=bool(before)):
        # Its address is free for anyone to register: it must not answer like an account.
        return _LoginCandidate(user=None)
    return _LoginCandidate(user, bool(mfa_enabled), bool(before) and not here, bool(here))


def _ensure_login_not_locked(
    email: str, origin: Origin, *, known_device: bool
) -> lockout.LoginGate:
    """Either step of a login: 429 while the email from this IP, or the IP, is locked out, or
    the email is throttled — counted as such. Keyed by the email as sent, so an unknown address
    gets the very same answer as a known one."""
    try:
        return lockout.ensure_not_locked(email, origin, known_device=known_device)
    except TooManyRequests:
        metrics.LOGINS.labels(result="locked").inc()
        raise


@dataclass(frozen=True)
class SignedIn:
    """A completed sign-in: the new session and its first refresh token, and how the user
    proved who they are (RFC 8176 `amr` values: `pwd`, then `otp` and `mfa` for a TOTP code,
    `mfa` for a recovery code)."""

    user: User
    session: AuthSession
    refresh_id: uuid.UUID
    amr: tuple[str, ...]


AMR_BY_METHOD = {"totp": ("pwd", "otp", "mfa"), "recovery_code": ("pwd", "mfa")}


def login(
    db: DbSession, origin: Origin, *, email: str, password: str, remember_me: bool = False
) -> TokenPair | MfaChallenge:
    """Lockout (429), then credentials (401), then verified email (403), then tokens — or, with
    TOTP active, a short-lived single-use `mfa_token` for the second step, which carries the
    `remember_me` choice."""
    result = sign_in(db, origin, email=email, password=password, remember_me=remember_me)
    if isinstance(result, MfaChallenge):
        return result
    return _pair(result.user, result.session, result.refresh_id)


def sign_in(
    db: DbSession, origin: Origin, *, email: str, password: str, remember_me: bool = False
) -> SignedIn | MfaChallenge:
    """The login's rules whatever the channel (the API's tokens, the provider's sign-in page):
    every check, counter, audit event and email of `login`, ending in a session."""
    candidate = _find_login_candidate(db, email, origin)
    user = candidate.user
    gate = _ensure_login_not_locked(email, origin, known_device=candidate.known_device)

    if user is None or user.password_hash is None or not user.active:
        passwords.equalize_timing(password)
        check = passwords.PasswordCheck(ok=False, upgraded_hash=None)
    else:
        check = passwords.verify_password(user.password_hash, password)
    if not check.ok:
        lockout.record_failure(db, email, user, origin, reason="invalid_credentials")
        metrics.LOGINS.labels(result="invalid_credentials").inc()
        raise InvalidCredentials("The email or password is incorrect.")
    assert user is not None

    settings = current_settings()
    if settings.require_email_verification and user.email_verified_at is None:
        metrics.LOGINS.labels(result="unverified").inc()
        raise EmailUnverified("Verify your email address before signing in.")

    loaded_version = user.version
    if check.upgraded_hash:
        user.password_hash = check.upgraded_hash
    if candidate.mfa_enabled:
        # The failure counter is not reset here: a known password must not buy an attacker a
        # fresh round of second-factor guesses.
        purpose = email_tokens.MFA_LOGIN_REMEMBER if remember_me else email_tokens.MFA_LOGIN
        token, _ = email_tokens.issue(db, user, purpose, settings.mfa_token_ttl)
        db.commit()
        metrics.LOGINS.labels(result="mfa_required").inc()
        return MfaChallenge(mfa_token=token, expires_in=settings.mfa_token_ttl)
    return _complete_login(
        db, origin, user, loaded_version, candidate.new_device, gate, remember_me=remember_me
    )


def _complete_login(
    db: DbSession,
    origin: Origin,
    user: User,
    loaded_version: int,
    new_device: bool,
    gate: lockout.LoginGate,
    *,
    remember_me: bool,
    amr: tuple[str, ...] = ("pwd",),
    **details: str,
) -> SignedIn:
    """Both kinds of login end here: a session, the new-device email, the audit event.
    `loaded_version` is the user's version as read, before this login changed anything."""
    settings = current_settings()
    lockout.register_success(user.email, origin, gate)
    session, refresh = sessions.start_session(db, origin, user, remember_me=remember_me)
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
        remember_me=remember_me,
        **details,
    )
    db.commit()
    # Only an upgraded hash changes the row (and its version); lockout counters live in Redis:
    # otherwise the cached snapshot is still right, and overwriting it would drop every
    # process's local copy.
    if user.version != loaded_version:
        state.publish_user(user)
    metrics.LOGINS.labels(result="success").inc()
    return SignedIn(user, session, refresh.id, amr)


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
    """The second step of `login`: tokens for the session `sign_in_mfa` starts."""
    done = sign_in_mfa(db, origin, mfa_token=mfa_token, code=code, recovery_code=recovery_code)
    return _pair(done.user, done.session, done.refresh_id)


def sign_in_mfa(
    db: DbSession,
    origin: Origin,
    *,
    mfa_token: str,
    code: str | None = None,
    recovery_code: str | None = None,
) -> SignedIn:
    """The second step: a TOTP code (its time step consumed) or a recovery code (used up).
    Wrong codes count towards the account and IP lockout; the token survives them until it
    expires, is used, or the account locks."""
    row = email_tokens.find_live(
        db, mfa_token, (email_tokens.MFA_LOGIN, email_tokens.MFA_LOGIN_REMEMBER)
    )
    if row is None:
        raise _invalid_mfa_token()
    user = db.get(User, row.user_id)
    if user is None or not user.active:
        raise _invalid_mfa_token()
    loaded_version = user.version
    signed_in_before, seen_here = db.execute(select(*_device_checks(user.id, origin))).one()
    gate = _ensure_login_not_locked(user.email, origin, known_device=bool(seen_here))
    try:
        method = reauth.check_second_factor(db, origin, user, code, recovery_code)
    except Unauthorized:
        metrics.LOGINS.labels(result="invalid_mfa_code").inc()
        raise
    row.used_at = utcnow()
    # The first sign-in of an account is not news to its owner.
    new_device = bool(signed_in_before) and not seen_here
    remember_me = row.purpose == email_tokens.MFA_LOGIN_REMEMBER
    return _complete_login(
        db,
        origin,
        user,
        loaded_version,
        new_device,
        gate,
        remember_me=remember_me,
        amr=AMR_BY_METHOD[method],
        mfa=method,
    )


_REFUSALS = {
    rotation.INVALID: ("The refresh token is invalid or expired.", "invalid-refresh-token"),
    rotation.IDLE_TIMEOUT: (
        "The session was idle for too long and has ended; sign in again.",
        "session-idle-timeout",
    ),
    rotation.REUSE_DETECTED: (
        "This refresh token was already used; the session has been revoked.",
        "refresh-token-reused",
    ),
}


def refresh(db: DbSession, origin: Origin, refresh_token: str) -> TokenPair:
    """Rotate a refresh token of an API session (`webapp.auth.rotation`): a token used twice
    revokes its whole session, except inside `REFRESH_REUSE_GRACE`; a session idle past its idle
    TTL ends here (401 `session-idle-timeout`). An OAuth client's refresh token is refused."""
    try:
        rotated = rotation.rotate(db, origin, refresh_token, client_pk=None)
    except rotation.RefreshRefused as refused:
        metrics.TOKEN_REFRESHES.labels(result=refused.result).inc()
        detail, slug = _REFUSALS[refused.result]
        raise Unauthorized(detail, slug=slug) from None
    metrics.TOKEN_REFRESHES.labels(result=rotated.result).inc()
    return _pair(rotated.user, rotated.session, rotated.refresh_id)
