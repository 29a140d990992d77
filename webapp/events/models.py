"""The domain event log: one row per event, its CloudEvents envelope as published."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from webapp.db import Base, new_id, utcnow


class DomainEvent(Base):
    __tablename__ = "domain_events"
    __table_args__ = (
        Index("ix_domain_events_created_at_id", "created_at", "id"),
        Index("ix_domain_events_type_created_at", "type", "created_at"),
        # The events the outbox dispatcher has still to fan out (a small, hot index).
        Index(
            "ix_domain_events_not_fanned_out",
            "created_at",
            "id",
            postgresql_where=text("fanned_out_at IS NULL"),
            sqlite_where=text("fanned_out_at IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    type: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(64))
    # A plain id, no foreign key: the log outlives the user (user.deleted names them).
    user_id: Mapped[uuid.UUID]
    # The CloudEvents 1.0 JSON event, exactly as delivered (its `id` is this row's id).
    envelope: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When the outbox dispatcher wrote its deliveries (one outbox message per subscribed
    # endpoint); NULL until then. Set at once for an event queued to one endpoint (a test).
    fanned_out_at: Mapped[datetime | None]
