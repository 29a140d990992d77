"""Webhook metrics: what each delivery attempt counts, and the state every process shares, read
from the database at scrape time.

Attempts are counted where they happen (`attempted`, called by webapp.webhooks.delivery once the
attempt is committed), in the worker's process. Endpoints failing or disabled, the oldest
undelivered message, the most overdue one and the dead letters are rows every process sees
alike: `StateCollector` reads them when Prometheus scrapes the API (registered by the composition
root beside webapp.ops.metrics' collector), so they are right however many processes run
(docs/webhooks.md, "Operations").
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from flask import Flask
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import and_, case, func, or_, select

from observability.metrics import WEBHOOK_DELIVERIES, WEBHOOK_DELIVERY_DURATION
from webapp.db import aware, utcnow
from webapp.events.models import DomainEvent
from webapp.extensions import db
from webapp.outbox.models import DEAD, ENQUEUED, PENDING, OutboxMessage
from webapp.webhooks.models import WebhookAttempt, WebhookEndpoint
from webapp.webhooks.service import TEMPLATE

DELIVERED, FAILED, REFUSED, GONE, DEAD_RESULT = "delivered", "failed", "refused", "gone", "dead"


def result_of(outcome: str, error: str | None) -> str:
    """The `result` label of one attempt, from its outcome (`Result.value`) and its error.

    The outcome says what happens to the message (gone, dead); the error says why an attempt
    that will be retried failed: a refusal of the SSRF guard is told apart, as it means the
    endpoint's host resolves where it must not, not that the receiver is down."""
    if error is None:
        return DELIVERED
    if outcome == GONE:
        return GONE
    if outcome == DEAD_RESULT:
        return DEAD_RESULT
    if error.startswith("refused:"):
        return REFUSED
    return FAILED


def attempted(event_type: str, outcome: str, error: str | None, latency_ms: int) -> None:
    """Count one attempt (never a message skipped without one) and its duration."""
    WEBHOOK_DELIVERIES.labels(event_type=event_type, result=result_of(outcome, error)).inc()
    WEBHOOK_DELIVERY_DURATION.observe(latency_ms / 1000)


class StateCollector(Collector):
    """Webhook state read at scrape time. No answer from the database: no samples (the scrape
    does not fail; `gatehouse_database_up` reports the outage)."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            with self.app.app_context():
                failing, disabled = self._endpoints()
                unfanned = _oldest_unfanned()  # read once, for both ages
                oldest, dead = self._messages(unfanned)
                overdue = self._overdue(unfanned)
                db.session.remove()
        except Exception:  # noqa: BLE001 - a scrape never fails for want of the database
            return
        yield _gauge(
            "gatehouse_webhook_endpoints_failing",
            "Enabled webhook endpoints whose latest delivery attempt failed",
            failing,
        )
        yield _gauge(
            "gatehouse_webhook_endpoints_disabled",
            "Webhook endpoints disabled (by an administrator or by a 410 Gone)",
            disabled,
        )
        yield _gauge(
            "gatehouse_webhook_oldest_undelivered_age_seconds",
            "Age of the oldest pending or enqueued webhook delivery (0 when none)",
            oldest,
        )
        yield _gauge(
            "gatehouse_webhook_oldest_overdue_age_seconds",
            "How long the most overdue webhook delivery has waited for its attempt since it was "
            "due (0 when none)",
            overdue,
        )
        yield _gauge(
            "gatehouse_webhook_dead_messages",
            "Webhook deliveries given up after their last try (dead letters)",
            dead,
        )

    @staticmethod
    def _endpoints() -> tuple[int, int]:
        # The newest attempt of each endpoint, by the (endpoint_id, created_at) index.
        latest = (
            select(WebhookAttempt.success)
            .where(WebhookAttempt.endpoint_id == WebhookEndpoint.id)
            .order_by(WebhookAttempt.created_at.desc(), WebhookAttempt.attempt.desc())
            .limit(1)
            .scalar_subquery()
        )
        failing = db.session.scalar(
            select(func.count())
            .select_from(WebhookEndpoint)
            .where(WebhookEndpoint.enabled.is_(True), latest.is_(False))
        )
        disabled = db.session.scalar(
            select(func.count())
            .select_from(WebhookEndpoint)
            .where(WebhookEndpoint.enabled.is_(False))
        )
        return int(failing or 0), int(disabled or 0)

    @staticmethod
    def _messages(unfanned: datetime | None) -> tuple[float, int]:
        rows = db.session.execute(
            select(OutboxMessage.status, func.count(), func.min(OutboxMessage.created_at))
            .where(
                OutboxMessage.template == TEMPLATE,
                OutboxMessage.status.in_((PENDING, ENQUEUED, DEAD)),
            )
            .group_by(OutboxMessage.status)
        ).all()
        firsts = [first for status, _, first in rows if status != DEAD and first is not None]
        if unfanned is not None:
            firsts.append(unfanned)
        age = (datetime.now(UTC) - aware(min(firsts))).total_seconds() if firsts else 0.0
        dead = sum(count for status, count, _ in rows if status == DEAD)
        return max(0.0, age), int(dead)

    @staticmethod
    def _overdue(unfanned: datetime | None) -> float:
        """Gatehouse's own lag, whatever the receivers do: a `pending` delivery is due from its
        `available_at` (new, or its retry's time), an `enqueued` one since it was enqueued. A
        failing receiver's retries wait for their time and are not overdue; a disabled endpoint's
        are skipped as soon as they are due. An event the dispatcher has not fanned out yet is
        due since it was written."""
        now = utcnow()
        due_since = case(
            (OutboxMessage.status == PENDING, OutboxMessage.available_at),
            else_=OutboxMessage.enqueued_at,
        )
        first = db.session.scalar(
            select(func.min(due_since)).where(
                OutboxMessage.template == TEMPLATE,
                or_(
                    and_(OutboxMessage.status == PENDING, OutboxMessage.available_at <= now),
                    OutboxMessage.status == ENQUEUED,
                ),
            )
        )
        # An event not fanned out is due from the moment its change committed.
        dues = [aware(t) for t in (first, unfanned) if t is not None]
        return max(0.0, (aware(now) - min(dues)).total_seconds()) if dues else 0.0


def _oldest_unfanned() -> datetime | None:
    """The oldest domain event the dispatcher has not fanned out to its endpoints yet: its
    deliveries do not exist yet, but it is already waiting for them."""
    oldest: datetime | None = db.session.scalar(
        select(func.min(DomainEvent.created_at)).where(DomainEvent.fanned_out_at.is_(None))
    )
    return oldest


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, documentation)
    gauge.add_metric([], value)
    return gauge
