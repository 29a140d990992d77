"""Sending events to an endpoint again: one delivery (`redeliver`) or every event of a period
(`replay`).

Each is a new outbox message of template `webhook` (a new delivery id) carrying the same event,
so the `webhook-id` header is the event's id as it was the first time: a consumer that already
handled it recognises it. The messages go through the normal delivery path (dispatcher, RQ,
retries, dead letters). A disabled endpoint is refused (409): its deliveries would be skipped.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, or_, select

from observability.tracing import inject_context
from webapp.audit import service as audit
from webapp.context import Origin
from webapp.db import DbSession, new_id, utcnow
from webapp.errors import Conflict, NotFound, ValidationFailed
from webapp.events import service as events
from webapp.events.models import DomainEvent
from webapp.outbox.models import PENDING, OutboxMessage
from webapp.webhooks.models import WebhookAttempt, WebhookEndpoint
from webapp.webhooks.service import QUEUE, TEMPLATE, get_endpoint

# A replay queues at most this many deliveries; a larger window is refused (422
# `replay-window-too-large`): replay it in shorter windows.
REPLAY_MAX_EVENTS = 10_000


@dataclass(frozen=True)
class Redelivery:
    message: OutboxMessage
    event: DomainEvent
    redelivery_of: uuid.UUID


@dataclass(frozen=True)
class Replay:
    count: int
    since: datetime
    until: datetime


def _enabled_endpoint(db: DbSession, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    endpoint = get_endpoint(db, endpoint_id)
    if not endpoint.enabled:
        raise Conflict(
            "The webhook is disabled: its deliveries would be skipped. Enable it first.",
            slug="webhook-disabled",
        )
    return endpoint


def _row(
    event_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    *,
    available_at: datetime,
    trace: dict[str, Any] | None,
    **extra: Any,
) -> dict[str, Any]:
    message_id = new_id()
    return {
        "id": message_id,
        # Unique per message (a fan-out's key is `webhook:<event>:<endpoint>`): the same event
        # may be sent to the same endpoint any number of times.
        "idempotency_key": f"{TEMPLATE}:{event_id}:{endpoint_id}:{message_id}",
        "template": TEMPLATE,
        "recipient": str(endpoint_id),
        "payload": {"event_id": str(event_id), "endpoint_id": str(endpoint_id), **extra},
        "queue": QUEUE,
        "status": PENDING,
        "available_at": available_at,
        # A lane delivers in (created_at, idempotency_key) order (webapp.webhooks.lanes).
        "created_at": available_at,
        "trace_context": trace,
    }


def _event_of_delivery(
    db: DbSession, endpoint_id: uuid.UUID, delivery_id: uuid.UUID
) -> uuid.UUID | None:
    """The event a delivery of this endpoint carried: its outbox message, or (the message
    gone) its delivery log, where `delivery_id` may also be an attempt's own id."""
    message = db.get(OutboxMessage, delivery_id)
    if (
        message is not None
        and message.template == TEMPLATE
        and message.payload.get("endpoint_id") == str(endpoint_id)
    ):
        return uuid.UUID(message.payload["event_id"])
    return db.scalar(
        select(WebhookAttempt.event_id)
        .where(
            WebhookAttempt.endpoint_id == endpoint_id,
            or_(WebhookAttempt.message_id == delivery_id, WebhookAttempt.id == delivery_id),
        )
        .limit(1)
    )


def redeliver(
    db: DbSession, origin: Origin, endpoint_id: uuid.UUID, delivery_id: uuid.UUID
) -> Redelivery:
    """Queue that delivery's event for its endpoint again (whatever the delivery's state)."""
    endpoint = _enabled_endpoint(db, endpoint_id)
    event_id = _event_of_delivery(db, endpoint.id, delivery_id)
    if event_id is None:
        raise NotFound("No such delivery for this webhook.")
    event = db.get(DomainEvent, event_id)
    if event is None:
        raise NotFound("The event of this delivery is no longer kept (WEBHOOK_RETENTION).")
    row = _row(
        event.id,
        endpoint.id,
        available_at=utcnow(),
        trace=inject_context() or None,
        redelivery_of=str(delivery_id),
    )
    message = OutboxMessage(**row)
    db.add(message)
    audit.record(
        db,
        origin,
        "webhook.redelivered",
        target_type="webhook",
        target_id=endpoint.id,
        event_id=str(event.id),
        event_type=event.type,
        delivery_id=str(delivery_id),
        new_delivery_id=str(message.id),
    )
    db.commit()
    return Redelivery(message, event, delivery_id)


def replay(
    db: DbSession,
    origin: Origin,
    endpoint_id: uuid.UUID,
    *,
    since: datetime,
    until: datetime | None = None,
) -> Replay:
    """Queue every kept event of [since, until) that the endpoint subscribes to, in event order.
    Refused (422) when the window is in the future, empty, or holds more than
    REPLAY_MAX_EVENTS events."""
    endpoint = _enabled_endpoint(db, endpoint_id)
    now = utcnow()
    # In UTC: SQLite compares the stored times as text, which carry no offset.
    since, until = since.astimezone(UTC), (until or now).astimezone(UTC)
    if since > now:
        raise ValidationFailed("`since` is in the future.", errors={"since": ["is in the future"]})
    if since >= until:
        raise ValidationFailed(
            "`since` must be before `until`.", errors={"until": ["must be after since"]}
        )
    types = endpoint.event_types or list(events.SUBSCRIBABLE)
    window = (
        DomainEvent.created_at >= since,
        DomainEvent.created_at < until,
        DomainEvent.type.in_(types),
    )
    event_ids = list(
        db.scalars(
            select(DomainEvent.id)
            .where(*window)
            .order_by(DomainEvent.created_at, DomainEvent.id)
            .limit(REPLAY_MAX_EVENTS + 1)
        )
    )
    if len(event_ids) > REPLAY_MAX_EVENTS:
        raise ValidationFailed(
            f"The window holds more than {REPLAY_MAX_EVENTS} events: replay shorter windows.",
            errors={"since": [f"more than {REPLAY_MAX_EVENTS} events until `until`"]},
            slug="replay-window-too-large",
        )
    trace = inject_context() or None
    # The dispatcher takes due rows by (available_at, id) and a lane orders them by created_at,
    # while ids are random: one microsecond apart, all already due, the messages go out in event
    # order, after what the endpoint already had waiting.
    rows = [
        _row(
            event_id,
            endpoint.id,
            available_at=now - timedelta(microseconds=len(event_ids) - n),
            trace=trace,
            replay=True,
        )
        for n, event_id in enumerate(event_ids)
    ]
    if rows:
        db.execute(insert(OutboxMessage), rows)
    audit.record(
        db,
        origin,
        "webhook.replayed",
        target_type="webhook",
        target_id=endpoint.id,
        since=since.isoformat(),
        until=until.isoformat(),
        count=len(rows),
    )
    db.commit()
    return Replay(len(rows), since, until)
