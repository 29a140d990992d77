"""Webhook endpoints (their signing secret encrypted at rest) and the delivery log."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from webapp.db import Base, JSONType, new_id, utcnow
from webapp.security import encryption


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(String(500), default="")
    # Event types delivered; empty: all of them.
    event_types: Mapped[list[str]] = mapped_column(JSONType, default=list)
    enabled: Mapped[bool] = mapped_column(default=True)
    # `whsec_…` under the ENCRYPTION_KEYS keyring, bound to the row id: it must be readable to
    # sign, so it cannot be hashed like an API key.
    secret_encrypted: Mapped[str] = mapped_column(Text)
    # After a rotation the secret it replaced, sealed the same way (under its own column name),
    # still signs beside the new one until `previous_secret_expires_at` (WEBHOOK_SECRET_OVERLAP).
    previous_secret_encrypted: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[datetime | None]
    secret_rotated_at: Mapped[datetime | None]
    created_by: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    version: Mapped[int] = mapped_column(default=1)
    # The first failed delivery attempt since the last successful one (NULL: not failing). Kept
    # outside the versioned representation: a delivery updates it without bumping `version`.
    failing_since: Mapped[datetime | None]

    __mapper_args__ = {"version_id_col": version}


SECRET_COLUMN = encryption.register(
    encryption.EncryptedColumn("webhook_endpoints", "secret_encrypted")
)
PREVIOUS_SECRET_COLUMN = encryption.register(
    encryption.EncryptedColumn("webhook_endpoints", "previous_secret_encrypted")
)


class WebhookAttempt(Base):
    """One row per HTTP attempt (or refusal before one): the delivery log."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (
        Index("ix_webhook_attempts_endpoint_id_created_at", "endpoint_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    # The outbox message carrying this (event, endpoint) delivery, and the event (its id is the
    # `webhook-id` header, the same on every attempt).
    message_id: Mapped[uuid.UUID]
    event_id: Mapped[uuid.UUID]
    event_type: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int]
    success: Mapped[bool]
    status_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[int]
    response_excerpt: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
