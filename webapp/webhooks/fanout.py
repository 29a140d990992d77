"""Fan-out: committed domain events → one outbox message per subscribed endpoint. Run by the
outbox dispatcher before each pass, off the request path (the request only writes the event).

A pass claims up to `limit` events not fanned out yet, oldest first (`FOR UPDATE SKIP LOCKED`),
reads the enabled endpoints once, adds the messages and marks the events `fanned_out_at`, all in
one transaction: a crash before the commit leaves the events to the next pass, none is lost and
none is fanned out twice (the messages' idempotency keys are unique besides). On PostgreSQL the
passes of several dispatchers are serialized by a transaction-scoped advisory lock (a dispatcher
that finds it taken skips its fan-out), so messages are written in event order; on SQLite the
database's single writer does the same.

An event goes to the endpoints enabled when it is fanned out (within about a second of its
commit, `JOBS_DISPATCH_INTERVAL`) that already existed when it happened and want its type: an
endpoint created after the event, or enabled after its fan-out, does not get it; one disabled
after the fan-out skips it at delivery.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import func, select

from webapp.db import DbSession, utcnow
from webapp.events.models import DomainEvent
from webapp.webhooks.models import WebhookEndpoint
from webapp.webhooks.service import queue_delivery

log = logging.getLogger(__name__)

CHUNK = 500
# pg_advisory_xact_lock key of the fan-out (any constant no other lock of the service uses).
FAN_OUT_LOCK = 0x6768_7766  # "ghwf"

_PENDING_EVENTS = (
    select(DomainEvent)
    .where(DomainEvent.fanned_out_at.is_(None))
    .order_by(DomainEvent.created_at, DomainEvent.id)
)
_ENABLED_ENDPOINTS = select(WebhookEndpoint).where(WebhookEndpoint.enabled.is_(True))


def wants(endpoint: WebhookEndpoint, event: DomainEvent) -> bool:
    if endpoint.created_at > event.created_at:  # no event from before the endpoint existed
        return False
    return not endpoint.event_types or event.type in endpoint.event_types


def fan_out_pending(db: DbSession, *, limit: int = CHUNK, now: datetime | None = None) -> int:
    """One fan-out pass; commits its own work. Returns how many events it fanned out (`limit`
    means more may wait)."""
    if db.get_bind().dialect.name == "postgresql" and not db.scalar(
        select(func.pg_try_advisory_xact_lock(FAN_OUT_LOCK))
    ):
        db.rollback()
        return 0
    events = list(db.scalars(_PENDING_EVENTS.limit(limit).with_for_update(skip_locked=True)))
    if not events:
        db.rollback()
        return 0
    now = now or utcnow()
    with db.no_autoflush:
        endpoints = list(db.scalars(_ENABLED_ENDPOINTS))
        messages = 0
        for event in events:
            for endpoint in endpoints:
                if wants(endpoint, event):
                    queue_delivery(db, event, endpoint)
                    messages += 1
            event.fanned_out_at = now
    db.commit()
    if messages:
        log.info("webhook fan-out", extra={"events": len(events), "messages": messages})
    return len(events)
