"""Retention: domain events and the webhook delivery log are kept WEBHOOK_RETENTION seconds.

`purge` deletes, in short batches, the `webhook_attempts` rows and the `domain_events` rows older
than that, but never an event that a delivery still waits to send (an outbox message `pending`
or `enqueued`): it would be skipped as "event gone". Replay and redelivery reach back as far as
the events are kept. Run by `flask webhooks purge` (a daily cron job is plenty).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, or_, select

from webapp.config import current_settings
from webapp.db import DbSession, delete_in_batches, utcnow
from webapp.events.models import DomainEvent
from webapp.outbox.models import ENQUEUED, PENDING, OutboxMessage
from webapp.webhooks.models import WebhookAttempt
from webapp.webhooks.service import TEMPLATE

BATCH = 1000  # rows per delete: short transactions, no long lock on a busy table


@dataclass(frozen=True)
class Purged:
    events: int
    attempts: int
    kept_pending: int  # old events kept because a delivery still waits for them
    before: datetime


def _waiting_event_ids(db: DbSession) -> set[uuid.UUID]:
    payloads = db.scalars(
        select(OutboxMessage.payload).where(
            OutboxMessage.template == TEMPLATE, OutboxMessage.status.in_((PENDING, ENQUEUED))
        )
    )
    return {uuid.UUID(p["event_id"]) for p in payloads if p.get("event_id")}


def _purge_attempts(db: DbSession, before: datetime) -> int:
    return delete_in_batches(db, WebhookAttempt, WebhookAttempt.created_at < before, batch=BATCH)


def _purge_events(db: DbSession, before: datetime) -> tuple[int, int]:
    """Pages through the old events by (created_at, id), deleting those no delivery waits for
    (fanned out, and no delivery of theirs pending or enqueued); returns (deleted, kept)."""
    waiting = _waiting_event_ids(db)
    deleted = kept = 0
    after: tuple[datetime, uuid.UUID] | None = None
    while True:
        query = select(DomainEvent.id, DomainEvent.created_at, DomainEvent.fanned_out_at).where(
            DomainEvent.created_at < before
        )
        if after is not None:
            at, last = after
            query = query.where(
                or_(
                    DomainEvent.created_at > at,
                    and_(DomainEvent.created_at == at, DomainEvent.id > last),
                )
            )
        page = db.execute(query.order_by(DomainEvent.created_at, DomainEvent.id).limit(BATCH)).all()
        if not page:
            return deleted, kept
        after = (page[-1].created_at, page[-1].id)
        # An event the dispatcher has not fanned out yet still has its deliveries ahead of it.
        doomed = [row.id for row in page if row.id not in waiting and row.fanned_out_at is not None]
        kept += len(page) - len(doomed)
        if doomed:
            db.execute(delete(DomainEvent).where(DomainEvent.id.in_(doomed)))
            deleted += len(doomed)
        db.commit()


def purge(db: DbSession, *, now: datetime | None = None, retention: int | None = None) -> Purged:
    """Delete what is older than `retention` seconds (default WEBHOOK_RETENTION)."""
    seconds = current_settings().webhook_retention if retention is None else retention
    before = (now or utcnow()) - timedelta(seconds=seconds)
    attempts = _purge_attempts(db, before)
    events, kept = _purge_events(db, before)
    return Purged(events, attempts, kept, before)
