"""Per-endpoint lanes: how many deliveries to one endpoint are in flight, and in which order.

- **Concurrency.** A delivery holds one of the endpoint's `concurrency` slots for its attempt: a
  PostgreSQL transaction-scoped advisory lock (`pg_try_advisory_xact_lock`) in the delivery's
  own transaction, so it goes with the commit, or with the connection of a worker that died. A
  delivery that finds every slot taken is postponed by `BUSY_DELAY` without spending a try. The
  database is the authority (no Redis involved): the limit holds through a Redis outage.
- **Order.** With one slot (the default), an endpoint's first tries go in event order: a message
  is held back while an earlier message of the same endpoint that was never tried is still open
  (pending or enqueued). A message that failed is no longer waited for: once it is in retry
  backoff, later ones proceed, and it is retried on its schedule. With more slots, up to that
  many deliveries run at once and no order is promised.
- **Dispatch.** The outbox dispatcher enqueues only messages their lane lets go (`dispatchable`):
  a backlog for a slow endpoint waits in PostgreSQL instead of churning through the queue, and
  the delivery that frees a slot hands the lane on (`jobs.tasks.deliver_webhook`).

Order is the events' time (`outbox_messages.created_at` is the event's time, the idempotency key
`webhook:<event id>:<endpoint id>` breaks ties), which is also the fan-out's order.
SQLite (the `make run` default) has no advisory locks: there a worker runs one job at a time.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime

from sqlalchemy import (
    ColumnElement,
    Integer,
    and_,
    cast,
    exists,
    func,
    literal_column,
    not_,
    or_,
    select,
    tuple_,
)
from sqlalchemy.orm import aliased

from webapp.db import DbSession
from webapp.outbox.models import ENQUEUED, OutboxMessage

BUSY_DELAY = 1.0  # seconds before a delivery that found its endpoint busy is due again
# The first key of the slots' advisory locks (two-int form: a key space of their own).
SLOT_LOCK_CLASS = 0x6768_776C  # "ghwl"

# Literals, not parameters: the predicate of the partial index ix_outbox_messages_webhook_open.
_WEBHOOK: ColumnElement[str] = literal_column("'webhook'")
_OPEN: tuple[ColumnElement[str], ...] = (
    literal_column("'pending'"),
    literal_column("'enqueued'"),
)


def _slot_key(endpoint_id: uuid.UUID, slot: int) -> int:
    """A signed 32-bit key per (endpoint, slot). Two endpoints sharing one only share a slot."""
    digest = hashlib.blake2b(endpoint_id.bytes + slot.to_bytes(2, "big"), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


def take_slot(db: DbSession, endpoint_id: uuid.UUID, concurrency: int) -> bool:
    """Take a free slot of the endpoint until the transaction ends; False when all are busy."""
    if db.get_bind().dialect.name != "postgresql":
        return True
    for slot in range(concurrency):
        lock = func.pg_try_advisory_xact_lock(
            cast(SLOT_LOCK_CLASS, Integer), cast(_slot_key(endpoint_id, slot), Integer)
        )
        if db.scalar(select(lock)):
            return True
    return False


def earlier_waiting(db: DbSession, message: OutboxMessage) -> bool:
    """Whether an earlier first try of the same endpoint is still open (pending or enqueued)."""
    query = select(OutboxMessage.id).where(
        OutboxMessage.template == _WEBHOOK,
        OutboxMessage.status.in_(_OPEN),
        OutboxMessage.recipient == message.recipient,
        OutboxMessage.attempts == 0,
        OutboxMessage.id != message.id,
        tuple_(OutboxMessage.created_at, OutboxMessage.idempotency_key)
        < tuple_(message.created_at, message.idempotency_key),
    )
    return db.scalar(query.limit(1)) is not None


def dispatchable(now: datetime, concurrency: int) -> ColumnElement[bool]:
    """The dispatcher's condition on a due outbox row: any email, or a webhook message whose
    lane has a free slot (fewer than `concurrency` others enqueued with a live lease) and, with
    one slot, no earlier first try open."""
    other = aliased(OutboxMessage)
    same_lane = and_(
        other.template == _WEBHOOK,
        other.status.in_(_OPEN),
        other.recipient == OutboxMessage.recipient,
        other.id != OutboxMessage.id,
    )
    in_flight = (
        select(func.count())
        .select_from(other)
        .where(same_lane, other.status == ENQUEUED, other.available_at > now)
        .scalar_subquery()
    )
    blocked: ColumnElement[bool] = in_flight >= concurrency
    if concurrency == 1:
        earlier = exists().where(
            same_lane,
            other.attempts == 0,
            tuple_(other.created_at, other.idempotency_key)
            < tuple_(OutboxMessage.created_at, OutboxMessage.idempotency_key),
        )
        blocked = or_(blocked, earlier)
    return or_(OutboxMessage.template != _WEBHOOK, not_(blocked))
