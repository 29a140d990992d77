"""The provider's browser side: its sign-in sessions and the consents users gave to clients.

A browser session is found by its cookie, of which only a keyed hash is stored (a stolen table
names no session). It belongs to one sign-in session of the API (`sessions`, the row the login
service starts), so whatever ends that session — sign-out everywhere, a password reset, a
revocation from the sessions list — ends the browser session too.

A consent is remembered per (user, client): the scopes the user allowed; a request for more
asks again.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from webapp.db import Base, JSONType, new_id, utcnow


class OAuthBrowserSession(Base):
    __tablename__ = "oauth_browser_sessions"
    __table_args__ = (
        Index("uq_oauth_browser_sessions_cookie_hash", "cookie_hash", unique=True),
        Index("ix_oauth_browser_sessions_user_id", "user_id"),
        Index("ix_oauth_browser_sessions_expires_at", "expires_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    cookie_hash: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    auth_session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE")
    )
    auth_time: Mapped[datetime]
    amr: Mapped[list[str]] = mapped_column(JSONType, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]  # the absolute end (the API session's)


class OAuthConsent(Base):
    __tablename__ = "oauth_consents"
    __table_args__ = (
        Index("uq_oauth_consents_user_id_client_pk", "user_id", "client_pk", unique=True),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    client_pk: Mapped[uuid.UUID] = mapped_column(ForeignKey("oauth_clients.id", ondelete="CASCADE"))
    scope: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def scopes(self) -> list[str]:
        return self.scope.split()
