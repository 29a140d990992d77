"""Refresh-token rotation with reuse detection, shared by the API (`/api/v1/auth/refresh`) and
the OAuth provider's `refresh_token` grant (`/oauth/token`).

A session belongs to the API (`client_pk` None) or to one OAuth client; a refresh token is
accepted only where its session belongs, so a token cannot cross from one to the other. Each
exchange consumes the token and hands out its successor. A token used twice revokes its whole
session (reuse detection), except inside `REFRESH_REUSE_GRACE`, where the same successor is
handed out again; a session idle past its idle TTL ends here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select

from webapp.audit import service as audit
from webapp.auth import sessions, state
from webapp.auth.models import AuthSession, RefreshToken
from webapp.auth.tokens import parse_refresh_token
from webapp.config import current_settings
from webapp.context import Origin
from webapp.db import DbSession, utcnow
from webapp.users.models import User

INVALID, IDLE_TIMEOUT, REUSE_DETECTED = "invalid", "idle_timeout", "reuse_detected"


class RefreshRefused(Exception):
    """The refresh token buys nothing; `result` says why (invalid, idle_timeout,
    reuse_detected: the last two ended the session)."""

    def __init__(self, result: str) -> None:
        super().__init__(result)
        self.result = result


@dataclass(frozen=True)
class Rotation:
    user: User
    session: AuthSession
    refresh_id: uuid.UUID  # the successor to hand out
    result: str  # "success", or "grace" for a retry inside REFRESH_REUSE_GRACE


def rotate(
    db: DbSession,
    origin: Origin,
    refresh_token: str,
    *,
    client_pk: uuid.UUID | None,
    check: Callable[[AuthSession], None] | None = None,
) -> Rotation:
    """Exchange `refresh_token` of a session of `client_pk` (None: the API's own) for its
    successor; commits. Raises `RefreshRefused`. `check` sees the token's session (of
    `client_pk`) before anything else is judged, and may refuse the request by raising."""
    token_id = parse_refresh_token(refresh_token)
    if token_id is None:
        raise RefreshRefused(INVALID)
    token = db.scalar(select(RefreshToken).where(RefreshToken.id == token_id).with_for_update())
    session = db.get(AuthSession, token.session_id) if token else None
    if token is None or session is None or session.client_pk != client_pk:
        raise RefreshRefused(INVALID)
    if check is not None:
        check(session)
    if not session.active:
        raise RefreshRefused(INVALID)
    user = db.get(User, session.user_id)
    if user is None or not user.active:
        raise RefreshRefused(INVALID)

    now = utcnow()
    if sessions.is_idle(session, now):
        sessions.end_idle_session(db, origin, session)
        raise RefreshRefused(IDLE_TIMEOUT)
    if token.used_at is not None:
        grace = current_settings().refresh_reuse_grace
        if grace and token.successor_id and (now - token.used_at).total_seconds() <= grace:
            db.commit()
            return Rotation(user, session, token.successor_id, "grace")
        revoked = sessions.revoke(db, [session], "refresh_token_reuse")
        audit.record(
            db,
            origin.acting_as(user.id),
            "auth.refresh_reuse_detected",
            target_type="session",
            target_id=session.id,
        )
        db.commit()
        state.publish_sessions_revoked(revoked)
        raise RefreshRefused(REUSE_DETECTED)

    successor = RefreshToken(session_id=session.id)
    db.add(successor)
    db.flush()
    token.used_at = now
    token.successor_id = successor.id
    session.last_used_at = now
    db.commit()
    return Rotation(user, session, successor.id, "success")
