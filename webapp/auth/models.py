"""Sessions (token families), their rotating refresh tokens and single-use email tokens."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from webapp.db import Base, JSONType, new_id, utcnow


class AuthSession(Base):
    """One login: the family of refresh tokens that descends from it.

    `expires_at` is the absolute end; the session also ends when no refresh token was exchanged
    for its idle TTL (`last_used_at` + SESSION_IDLE_TTL, or REMEMBER_ME_IDLE_TTL when
    `remember_me`). The flag, not the number, is stored so that an operator who shortens the
    idle TTL shortens it for sessions already open.

    A session with `client_pk` was started by an OAuth client's authorization code (the
    provider's token endpoint): its refresh tokens work only there, for that client, and it
    keeps the `scope` and `amr` the user granted and proved, which later ID tokens repeat. The
    API's own sessions have none of the three.
    """

    __tablename__ = "sessions"
    __table_args__ = (
        Index("ix_sessions_user_id_created_at", "user_id", "created_at"),
        Index("ix_sessions_client_pk", "client_pk"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The last password or second-factor check of this session (login, MFA step, reauthenticate):
    # refreshes keep it, so sensitive changes can demand a recent one (OIDC `auth_time`).
    auth_time: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    remember_me: Mapped[bool] = mapped_column(default=False, server_default=false())
    client_pk: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("oauth_clients.id", ondelete="CASCADE")
    )
    scope: Mapped[str | None] = mapped_column(Text)
    amr: Mapped[list[str] | None] = mapped_column(JSONType)

    @property
    def active(self) -> bool:
        return self.revoked_at is None and self.expires_at > utcnow()


class RefreshToken(Base):
    """A refresh token of a session; used once, then replaced by its successor."""

    __tablename__ = "refresh_tokens"
    __table_args__ = (Index("ix_refresh_tokens_session_id", "session_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    used_at: Mapped[datetime | None]
    successor_id: Mapped[uuid.UUID | None]


class OneTimeToken(Base):
    """A single-use emailed token (email verification, password reset, email change), stored
    as a hash."""

    __tablename__ = "one_time_tokens"
    __table_args__ = (Index("ix_one_time_tokens_user_id_purpose", "user_id", "purpose"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(32))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    # An email change: the address the token was mailed to, which becomes the login when the
    # token is confirmed (the pending address lives only here).
    new_email: Mapped[str | None] = mapped_column(String(320))
