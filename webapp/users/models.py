"""The user account: identity, credentials and role."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import datetime

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, validates

from webapp.db import Base, new_id, utcnow


def email_key(email: str) -> str:
    """The form two addresses share when a person would read them as the same: Unicode
    NFKC_Casefold (compatibility characters such as full-width letters folded, case folded),
    computed here rather than by the database, whose lower() depends on its locale."""
    folded = unicodedata.normalize("NFKC", email.strip()).casefold()
    return unicodedata.normalize("NFKC", folded)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        Index("uq_users_email_normalized", "email_normalized", unique=True),
        Index("ix_users_created_at_id", "created_at", "id"),
        Index("ix_users_role_created_at", "role", "created_at"),
        Index("ix_users_active_created_at", "active", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320))
    # Unique, and what every lookup by address compares: look-alikes are the same account.
    # Text: compatibility decomposition can make it longer than the address.
    email_normalized: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32), default="user")
    active: Mapped[bool] = mapped_column(default=True)
    email_verified_at: Mapped[datetime | None]
    failed_login_count: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # Optimistic concurrency: every UPDATE bumps it; ETags and If-Match are built on it.
    version: Mapped[int] = mapped_column(default=1)

    __mapper_args__ = {"version_id_col": version}

    @property
    def email_verified(self) -> bool:
        return self.email_verified_at is not None

    @validates("email")
    def _keep_key(self, _key: str, value: str) -> str:
        self.email_normalized = email_key(value)
        return value
