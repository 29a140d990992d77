"""The transactional outbox: messages written in the same transaction as the change, and the
delivery records that make sending them idempotent.

A message moves `pending → enqueued → sent`, or ends `dead` after its last try; PostgreSQL holds
that state, RQ is only the transport (see docs/jobs.md). `available_at` is the next moment the
dispatcher looks at a row: when a pending message is due, and when the lease of an enqueued one
runs out.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from webapp.db import Base, new_id, utcnow
from webapp.security import encryption

PENDING, ENQUEUED, SENT, DEAD = "pending", "enqueued", "sent", "dead"
# Delivery records: a claim while an SMTP send is in flight, then proof that it was sent.
SENDING, DELIVERED, FAILED = "sending", "sent", "failed"


# A payload's secret fields (one-time links, tokens) live encrypted under this member of the JSON
# until the message is sent (webapp.outbox.sealing); `keys rotate-encryption` covers it.
SEALED_PAYLOAD = encryption.register(
    encryption.EncryptedColumn("outbox_messages", "payload", json_key="sealed")
)


_WEBHOOK_OPEN = "template = 'webhook' AND status IN ('pending', 'enqueued')"


class OutboxMessage(Base):
    __tablename__ = "outbox_messages"
    __table_args__ = (
        Index("ix_outbox_messages_status_available_at", "status", "available_at"),
        # The open webhook deliveries of an endpoint (`recipient`), in event order: what the
        # per-endpoint concurrency and order rules read (webapp.webhooks.lanes).
        Index(
            "ix_outbox_messages_webhook_open",
            "recipient",
            "created_at",
            postgresql_where=text(_WEBHOOK_OPEN),
            sqlite_where=text(_WEBHOOK_OPEN),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    template: Mapped[str] = mapped_column(String(64))
    recipient: Mapped[str] = mapped_column(String(320))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    queue: Mapped[str] = mapped_column(String(16), default="default")
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(128))
    # W3C trace context of the request that wrote the message (when tracing is on).
    trace_context: Mapped[dict[str, Any] | None]
    # The RQ job that carries the message now (the message id itself, or a `low` batch's id).
    job_id: Mapped[str | None] = mapped_column(String(64))
    available_at: Mapped[datetime] = mapped_column(default=utcnow)
    enqueued_at: Mapped[datetime | None]
    dead_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    sent_at: Mapped[datetime | None]


class EmailDelivery(Base):
    """One row per message idempotency key (unique): whoever inserts it owns the send."""

    __tablename__ = "email_deliveries"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("outbox_messages.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(16), default=SENDING)
    # How many sends were started; more than one means a retry or a send interrupted by a crash.
    send_attempts: Mapped[int] = mapped_column(default=0)
    claimed_until: Mapped[datetime | None]
    smtp_message_id: Mapped[str] = mapped_column(String(255))
    smtp_response: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    sent_at: Mapped[datetime | None]
