"""The API's `/metrics`: every process's samples plus the state all of them share.

State that every API process and worker shares (queue depth, dead letters, the outbox backlog,
the newest recorded database backup, whether Redis and the database answer) is read at scrape
time by `StateCollector`, so it is right however many processes run. Where `/metrics` is
answered at all is `observability.exposure`'s rule: on the metrics listener, or on the API's own
port outside production while `METRICS_PORT` is unset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from flask import Flask, Response, abort
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import case, func, or_, select

from observability import exposure
from observability.metrics import QUEUES, exposition
from webapp.config import settings_of
from webapp.db import aware
from webapp.extensions import db, limiter, redis_store
from webapp.ops.models import BackupRun
from webapp.outbox.models import DEAD, ENQUEUED, PENDING, OutboxMessage

# The messages whose wait is Gatehouse's own (the age behind GatehouseOutboxLagging): every email,
# and a webhook delivery (template `webhook`, webapp.webhooks.service.TEMPLATE) until its first
# attempt. A webhook tried once waits on its receiver, retried for up to a day by design; its age
# is gatehouse_webhook_oldest_undelivered_age_seconds (webapp.webhooks.metrics).
_waiting_on_us = case(
    (
        or_(OutboxMessage.template != "webhook", OutboxMessage.attempts == 0),
        OutboxMessage.created_at,
    )
)


class StateCollector(Collector):
    """Shared state read at scrape time: queues, dead letters, the outbox and backups."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self._queues()
        yield from self._outbox()
        yield from self._backups()

    def _queues(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "gatehouse_queue_depth", "Jobs waiting per queue", labels=["queue"]
        )
        dead = GaugeMetricFamily(
            "gatehouse_dead_letter_jobs", "Jobs in the failed-job registry", labels=["queue"]
        )
        up = GaugeMetricFamily("gatehouse_redis_up", "1 when Redis answered this scrape")
        client = redis_store.client
        try:
            if client is None:
                raise ConnectionError("redis not configured")
            pipe = client.pipeline(transaction=False)
            for queue in QUEUES:
                pipe.llen(f"rq:queue:{queue}")
                pipe.zcard(f"rq:failed:{queue}")
            counts = pipe.execute()
            for index, queue in enumerate(QUEUES):
                depth.add_metric([queue], counts[2 * index])
                dead.add_metric([queue], counts[2 * index + 1])
            up.add_metric([], 1)
        except Exception:  # noqa: BLE001 - a scrape reports Redis as down, it does not fail
            up.add_metric([], 0)
        yield from (depth, dead, up)

    def _outbox(self) -> Iterator[GaugeMetricFamily]:
        messages = GaugeMetricFamily(
            "gatehouse_outbox_messages", "Unsent outbox messages by status", labels=["status"]
        )
        oldest = GaugeMetricFamily(
            "gatehouse_outbox_oldest_unsent_age_seconds",
            "Age of the oldest pending or enqueued outbox message (0 when none); webhook "
            "deliveries only until their first attempt",
        )
        up = GaugeMetricFamily("gatehouse_database_up", "1 when the database answered this scrape")
        try:
            with self.app.app_context():
                rows = db.session.execute(
                    select(OutboxMessage.status, func.count(), func.min(_waiting_on_us))
                    .where(OutboxMessage.status.in_((PENDING, ENQUEUED, DEAD)))
                    .group_by(OutboxMessage.status)
                ).all()
                db.session.remove()
            by_status = {status: (count, first) for status, count, first in rows}
            for status in (PENDING, ENQUEUED, DEAD):
                messages.add_metric([status], by_status.get(status, (0, None))[0])
            firsts = [first for status, (_, first) in by_status.items() if status != DEAD and first]
            age = (datetime.now(UTC) - aware(min(firsts))).total_seconds() if firsts else 0.0
            oldest.add_metric([], max(0.0, age))
            up.add_metric([], 1)
        except Exception:  # noqa: BLE001
            up.add_metric([], 0)
            yield up
            return
        yield from (messages, oldest, up)

    def _backups(self) -> Iterator[GaugeMetricFamily]:
        """The newest row scripts/backup.sh recorded. No row, or no answer: no samples, so the
        alert's absence rule sees "no backup known" (GatehouseBackupStale)."""
        try:
            with self.app.app_context():
                newest = db.session.execute(
                    select(BackupRun.finished_at, BackupRun.size_bytes)
                    .order_by(BackupRun.finished_at.desc())
                    .limit(1)
                ).first()
                db.session.remove()
        except Exception:  # noqa: BLE001 - gatehouse_database_up already reports the outage
            return
        if newest is None:
            return
        finished_at, size = newest
        timestamp = GaugeMetricFamily(
            "gatehouse_backup_last_success_timestamp_seconds",
            "Unix time the newest successful database backup (scripts/backup.sh) was recorded",
        )
        timestamp.add_metric([], aware(finished_at).timestamp())
        size_bytes = GaugeMetricFamily(
            "gatehouse_backup_last_size_bytes", "Size of the newest successful backup's archive"
        )
        size_bytes.add_metric([], size)
        yield from (timestamp, size_bytes)


def init_app(app: Flask, *shared: Callable[[Flask], Collector]) -> None:
    """`/metrics` with `StateCollector` and the features' own scrape-time collectors (`shared`:
    built per scrape from the app, e.g. webapp.webhooks.metrics.StateCollector, passed by the
    composition root: this layer imports no feature above it)."""
    settings = settings_of(app)

    @app.get(exposure.METRICS_PATH)
    @limiter.exempt
    def metrics_endpoint() -> Response:
        if not exposure.served_here(settings.metrics_port, production=settings.is_production):
            abort(404)  # off the public port: observability/exposure.py
        collectors = [StateCollector(app), *(make(app) for make in shared)]
        return Response(exposition(app, *collectors), mimetype=CONTENT_TYPE_LATEST)
