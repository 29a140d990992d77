"""The table behind `Idempotency-Key` (webapp.http.idempotency): one row per (caller and route,
key) with the request's fingerprint and the first reply (encrypted when it holds a secret), and
its housekeeping. Apart from the request side so that the CLI and jobs can purge it without
importing Flask's request machinery."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from webapp.db import Base, DbSession, delete_in_batches, new_id, utcnow
from webapp.security import encryption

MAX_KEY_LENGTH = 255
SEALED_BODY = encryption.register(
    encryption.EncryptedColumn("idempotency_records", "response_body", mixed=True)
)


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_records"
    __table_args__ = (
        Index("uq_idempotency_records_scope_key", "scope", "key", unique=True),
        Index("ix_idempotency_records_created_at", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    scope: Mapped[str] = mapped_column(String(300))
    key: Mapped[str] = mapped_column(String(MAX_KEY_LENGTH))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None]
    response_body: Mapped[str | None] = mapped_column(Text)
    response_headers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]


PURGE_BATCH = 1000


def purge_expired(db_session: DbSession, *, ttl: int, now: datetime | None = None) -> int:
    """Delete the records older than `ttl` seconds (a key is forgotten after IDEMPOTENCY_TTL
    anyway; a request replaces its own expired record, but keys never used again stayed), in
    batches of PURGE_BATCH, each committed; returns how many."""
    before = (now or utcnow()) - timedelta(seconds=ttl)
    return delete_in_batches(
        db_session, IdempotencyRecord, IdempotencyRecord.created_at < before, batch=PURGE_BATCH
    )
