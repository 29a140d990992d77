"""Delivering one (event, endpoint) outbox message: the body of the `jobs.tasks.deliver_webhook`
job, run in a worker with an application context.

The outbox row is the state, as for an email (docs/jobs.md): it is locked (`FOR UPDATE`) for the
attempt, so a duplicate job in transit waits and then finds it `sent`; a worker killed
mid-attempt drops its connection and with it the lock, and the dispatcher's lease or recovery
sends the message again. Every attempt (or refusal) writes a `webhook_attempts` row, committed
with the row's next state: `sent` on a 2xx, else `pending` again after RETRY_SCHEDULE, or `dead`
after its last try (a dead letter, replayed like an email's). A 410 disables the endpoint, and so
do failures without a success for `disable_after` seconds (webapp.webhooks.health). Before the
attempt, the endpoint's lane must let it go: a free slot, and no earlier first try open
(webapp.webhooks.lanes); otherwise it is postponed without spending a try.
"""

from __future__ import annotations

import enum
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
from sqlalchemy import select

from webapp.db import DbSession, utcnow
from webapp.events.models import DomainEvent
from webapp.outbox.models import DEAD, PENDING, SENT, OutboxMessage
from webapp.security.encryption import DecryptionError
from webapp.webhooks import client, health, lanes, metrics, signing, ssrf
from webapp.webhooks.models import WebhookAttempt, WebhookEndpoint
from webapp.webhooks.rotation import signing_secrets

log = logging.getLogger(__name__)

# Seconds before retry n (the schedule: about a day in all, 8 tries).
RETRY_SCHEDULE = (5, 300, 1800, 7200, 18000, 36000, 36000)
EXCERPT_BYTES = 1024  # of the response kept in the delivery log
USER_AGENT = "Gatehouse-Webhooks/1"
GONE = 410
DISABLE_AFTER = 259200  # seconds of failures without a success (WEBHOOK_DISABLE_AFTER)


class Result(enum.Enum):
    SENT = "sent"
    RETRY = "retry"
    DEAD = "dead"
    DUPLICATE = "duplicate"  # already sent or dead (a duplicate job)
    SKIPPED = "skipped"  # its endpoint was deleted or disabled, or its event is gone
    GONE = "gone"  # 410: the endpoint is disabled
    DISABLED = "disabled"  # failed, and failing for `disable_after`: the endpoint is disabled
    BUSY = "busy"  # every slot of the endpoint taken: postponed, no try spent
    WAITING = "waiting"  # an earlier first try of the endpoint is open: postponed, no try spent


@dataclass(frozen=True)
class Outcome:
    result: Result
    detail: str = ""
    endpoint_id: uuid.UUID | None = None  # whose lane the delivery may hand on


def body_of(event: DomainEvent) -> bytes:
    return orjson.dumps(event.envelope)


def deliver(
    db: DbSession,
    message_id: uuid.UUID,
    *,
    allow_private: bool,
    concurrency: int = 1,
    disable_after: float = DISABLE_AFTER,
) -> Outcome:
    message = db.scalar(
        select(OutboxMessage).where(OutboxMessage.id == message_id).with_for_update()
    )
    if message is None or message.status in (SENT, DEAD):
        db.rollback()
        return Outcome(Result.DUPLICATE)
    endpoint = db.get(WebhookEndpoint, uuid.UUID(message.payload["endpoint_id"]))
    event = db.get(DomainEvent, uuid.UUID(message.payload["event_id"]))
    forced = bool(message.payload.get("force"))  # a test event goes to a disabled endpoint too
    if endpoint is None or event is None or not (endpoint.enabled or forced):
        why = (
            "endpoint deleted"
            if endpoint is None
            else "event gone"
            if event is None
            else "endpoint disabled"
        )
        message.status, message.sent_at, message.last_error = SENT, utcnow(), f"skipped: {why}"
        db.commit()
        return Outcome(Result.SKIPPED, why, uuid.UUID(message.recipient))
    held = _hold_back(db, message, concurrency)
    if held is not None:
        return held
    attempt_no = message.attempts + 1
    status, excerpt, error = None, None, None
    started = time.monotonic()
    try:
        body = body_of(event)
        headers = {
            **signing.headers(signing_secrets(endpoint), str(event.id), int(time.time()), body),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }
        response = client.post(endpoint.url, body, headers, allow_private=allow_private)
        status = response.status
        excerpt = response.body[:EXCERPT_BYTES].decode("utf-8", "replace")
        if not 200 <= status < 300:
            error = f"HTTP {status}"
    except ssrf.Refused as exc:
        error = f"refused: {exc}"
    except client.SendFailed as exc:
        error = str(exc)
    except DecryptionError as exc:  # the key it was sealed under left ENCRYPTION_KEYS
        error = f"cannot sign: {exc.__class__.__name__}"
    latency_ms = int((time.monotonic() - started) * 1000)
    db.add(
        WebhookAttempt(
            endpoint_id=endpoint.id,
            message_id=message.id,
            event_id=event.id,
            event_type=event.type,
            attempt=attempt_no,
            success=error is None,
            status_code=status,
            error=error,
            latency_ms=latency_ms,
            response_excerpt=excerpt,
        )
    )
    now = utcnow()
    failing_since = health.record_attempt(db, endpoint, success=error is None, now=now)
    if status == GONE:
        outcome = _gone(db, message, endpoint, attempt_no)
    else:
        outcome = _advance(message, attempt_no, error)
        if failing_since is not None and now - failing_since >= timedelta(seconds=disable_after):
            outcome = _failing(db, message, endpoint, outcome, failing_since, now)
    db.commit()
    metrics.attempted(event.type, outcome.result.value, error, latency_ms)
    log.info(
        "webhook delivery",
        extra={
            "message_id": str(message.id),
            "endpoint_id": str(endpoint.id),
            "event_type": event.type,
            "attempt": attempt_no,
            "status_code": status,
            "result": outcome.result.value,
            "latency_ms": latency_ms,
        },
    )
    return Outcome(outcome.result, outcome.detail, endpoint.id)


def _hold_back(db: DbSession, message: OutboxMessage, concurrency: int) -> Outcome | None:
    """Postpone the message, without spending a try, when its endpoint's lane does not let it go
    now (webapp.webhooks.lanes); None when it may be delivered."""
    if concurrency == 1 and lanes.earlier_waiting(db, message):
        result, why = Result.WAITING, "an earlier delivery to this endpoint goes first"
    elif not lanes.take_slot(db, uuid.UUID(message.recipient), concurrency):
        result, why = Result.BUSY, "the endpoint's deliveries in flight are at their limit"
    else:
        return None
    message.status = PENDING
    message.available_at = utcnow() + timedelta(seconds=lanes.BUSY_DELAY)
    db.commit()
    return Outcome(result, why)


def _gone(
    db: DbSession, message: OutboxMessage, endpoint: WebhookEndpoint, attempt_no: int
) -> Outcome:
    """410 Gone: the receiver says the endpoint is no more. It is disabled (audited, as the
    system; the administrators are mailed), this message is not retried and the others waiting
    for it are skipped."""
    now = utcnow()
    message.attempts, message.status, message.sent_at = attempt_no, SENT, now
    message.last_error = "HTTP 410: endpoint disabled"
    health.disable(db, endpoint, health.GONE, now=now, last_error="HTTP 410")
    return Outcome(Result.GONE, "HTTP 410")


def _failing(
    db: DbSession,
    message: OutboxMessage,
    endpoint: WebhookEndpoint,
    outcome: Outcome,
    failing_since: datetime,
    now: datetime,
) -> Outcome:
    """Failing for `disable_after`: the endpoint is disabled. A message that would be retried
    is not (its retries would be skipped); a dead letter stays one."""
    health.disable(
        db,
        endpoint,
        health.FAILING,
        now=now,
        failing_since=failing_since,
        last_error=message.last_error,
    )
    if outcome.result is not Result.RETRY:
        return outcome
    message.status, message.sent_at = SENT, now
    message.last_error = f"{message.last_error}: endpoint disabled"
    return Outcome(Result.DISABLED, outcome.detail)


def _advance(message: OutboxMessage, attempt_no: int, error: str | None) -> Outcome:
    now = utcnow()
    message.attempts = attempt_no
    if error is None:
        message.status, message.sent_at, message.last_error = SENT, now, None
        return Outcome(Result.SENT)
    message.last_error = error
    if attempt_no > len(RETRY_SCHEDULE):
        message.status, message.dead_at = DEAD, now
        return Outcome(Result.DEAD, error)
    message.status = PENDING
    message.available_at = now + timedelta(seconds=RETRY_SCHEDULE[attempt_no - 1])
    return Outcome(Result.RETRY, error)
