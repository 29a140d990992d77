"""Sessions (one per login) and their revocation; the auth cache learns of every revocation
after the commit that made it."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select

from webapp.audit import service as audit
from webapp.auth import state
from webapp.auth.models import AuthSession, RefreshToken
from webapp.config import current_settings
from webapp.context import Origin
from webapp.db import DbSession, new_id, utcnow
from webapp.errors import NotFound
from webapp.oauth.models import OAuthClient
from webapp.users.models import User


def stored_user_agent(origin: Origin) -> str | None:
    """The User-Agent as a session row keeps it (the column holds 512 characters)."""
    return (origin.user_agent or "")[:512] or None


def idle_ttl(session: AuthSession) -> int:
    """Seconds without a refresh after which the session ends."""
    settings = current_settings()
    return settings.remember_me_idle_ttl if session.remember_me else settings.session_idle_ttl


def idle_deadline(session: AuthSession) -> datetime:
    """When the session ends unless a refresh token is exchanged first (never after its
    absolute end)."""
    return min(session.last_used_at + timedelta(seconds=idle_ttl(session)), session.expires_at)


def is_idle(session: AuthSession, now: datetime) -> bool:
    return idle_deadline(session) <= now


def _not_idle(now: datetime) -> ColumnElement[bool]:
    settings = current_settings()
    return or_(
        and_(
            AuthSession.remember_me.is_(False),
            AuthSession.last_used_at > now - timedelta(seconds=settings.session_idle_ttl),
        ),
        and_(
            AuthSession.remember_me.is_(True),
            AuthSession.last_used_at > now - timedelta(seconds=settings.remember_me_idle_ttl),
        ),
    )


def start_session(
    db: DbSession, origin: Origin, user: User, *, remember_me: bool = False
) -> tuple[AuthSession, RefreshToken]:
    """Both rows are inserted by the caller's commit: ids and times are set here, not at a flush
    (each flush is a round trip and a pass of the unit of work). `remember_me` buys the long
    lifetimes (REMEMBER_ME_TTL, REMEMBER_ME_IDLE_TTL) instead of the short ones."""
    settings = current_settings()
    now = utcnow()
    lifetime = settings.remember_me_ttl if remember_me else settings.refresh_token_ttl
    session = AuthSession(
        id=new_id(),
        user_id=user.id,
        created_at=now,
        last_used_at=now,
        auth_time=now,
        expires_at=now + timedelta(seconds=lifetime),
        ip=origin.ip,
        user_agent=stored_user_agent(origin),
        remember_me=remember_me,
    )
    refresh = RefreshToken(id=new_id(), session_id=session.id, created_at=now)
    db.add_all([session, refresh])
    return session, refresh


def revoke(db: DbSession, sessions: list[AuthSession], reason: str) -> list[uuid.UUID]:
    now = utcnow()
    revoked = []
    for session in sessions:
        if session.revoked_at is None:
            session.revoked_at = now
            session.revoked_reason = reason
            revoked.append(session.id)
    return revoked


def revoke_audited(
    db: DbSession, origin: Origin, sessions: list[AuthSession], reason: str
) -> list[uuid.UUID]:
    """Revoke the live ones of `sessions` for `reason`, each audited as `session.revoked` with
    the reason (the event a revocation emits reads it there); the caller commits and publishes
    the revocations to the auth cache."""
    revoked = revoke(db, sessions, reason)
    for session_id in revoked:
        audit.record(
            db,
            origin,
            "session.revoked",
            target_type="session",
            target_id=session_id,
            reason=reason,
        )
    return revoked


def end_idle_session(db: DbSession, origin: Origin, session: AuthSession) -> None:
    """A refresh came after the idle deadline: revoke the session (audited, committed)."""
    revoked = revoke(db, [session], "idle_timeout")
    audit.record(
        db,
        origin.acting_as(session.user_id),
        "auth.session_idle_timeout",
        target_type="session",
        target_id=session.id,
        idle_seconds=int((utcnow() - session.last_used_at).total_seconds()),
    )
    db.commit()
    state.publish_sessions_revoked(revoked)


def logout(db: DbSession, origin: Origin, session_id: uuid.UUID) -> None:
    session = db.get(AuthSession, session_id)
    if session is None:
        return
    revoked = revoke(db, [session], "logout")
    audit.record(db, origin, "auth.logout", target_type="session", target_id=session_id)
    db.commit()
    state.publish_sessions_revoked(revoked)


def list_sessions(db: DbSession, user_id: uuid.UUID) -> list[AuthSession]:
    """The user's sessions that are neither revoked, expired nor idle past their idle TTL."""
    now = utcnow()
    query = (
        select(AuthSession)
        .where(
            AuthSession.user_id == user_id,
            AuthSession.revoked_at.is_(None),
            AuthSession.expires_at > now,
            _not_idle(now),
        )
        .order_by(AuthSession.created_at.desc(), AuthSession.id.desc())
    )
    return list(db.scalars(query))


def clients_of(db: DbSession, listed: list[AuthSession]) -> dict[uuid.UUID, OAuthClient]:
    """The OAuth clients (by row id) that the provider sessions among `listed` belong to, in one
    query, so a session list can name each session's application."""
    wanted = {s.client_pk for s in listed if s.client_pk is not None}
    if not wanted:
        return {}
    return {c.id: c for c in db.scalars(select(OAuthClient).where(OAuthClient.id.in_(wanted)))}


def revoke_session(
    db: DbSession, origin: Origin, user_id: uuid.UUID, session_id: uuid.UUID
) -> None:
    session = db.get(AuthSession, session_id)
    if session is None or session.user_id != user_id or not session.active:
        raise NotFound("No such active session.")
    revoked = revoke(db, [session], "revoked_by_user")
    audit.record(db, origin, "session.revoked", target_type="session", target_id=session_id)
    db.commit()
    state.publish_sessions_revoked(revoked)


def revoke_all_sessions(
    db: DbSession, origin: Origin, user_id: uuid.UUID, *, keep: uuid.UUID | None, reason: str
) -> int:
    """Revoke every live session of a user except `keep`; the caller commits."""
    sessions = [s for s in list_sessions(db, user_id) if s.id != keep]
    revoked = revoke_audited(db, origin, sessions, reason)
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
