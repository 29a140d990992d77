"""Prometheus metrics, all in the `gatehouse_` namespace.

HTTP metrics (`HttpMetrics`) are labelled by route *template* (never the raw path).
Counters of business events are incremented where the events happen. State that is shared by
every process (queue depth, dead letters, outbox backlog) is read at scrape time by
`StateCollector`, so it is right however many API processes and workers run. Under gunicorn
(`PROMETHEUS_MULTIPROC_DIR` set) every process writes its samples to that directory and `/metrics`
aggregates them (see gunicorn.conf.py for the directory's cleanup and dead-worker marking).
"""

from __future__ import annotations

import functools
import glob
import os
import platform
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from timeit import default_timer
from typing import Any

from flask import Flask, Request, Response, abort, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import event
from sqlalchemy.engine import Engine

from observability.context import STARTED_KEY, UNEXPECTED_KEY

# Scrapes, probes and static assets: they would drown the API's own latency.
UNMEASURED_PATHS = ("/metrics", "/health", "/api/docs/assets/")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
QUEUES = ("high", "default", "low")

REGISTRATIONS = Counter("gatehouse_registrations_total", "Accounts registered")
LOGINS = Counter(
    "gatehouse_logins_total",
    "Login attempts by result (success, mfa_required, invalid_credentials, locked, unverified, "
    "invalid_mfa_token, invalid_mfa_code)",
    ["result"],
)
LOCKOUTS = Counter(
    "gatehouse_lockouts_total",
    "Lockouts started, by scope (account_ip: an email from one IP; account: an email throttled "
    "across all IPs; ip: one IP whatever the email)",
    ["scope"],
)
TOKEN_REFRESHES = Counter(
    "gatehouse_token_refreshes_total",
    "Refresh token exchanges by result (success, grace, reuse_detected, idle_timeout, invalid)",
    ["result"],
)
CACHE_REQUESTS = Counter(
    "gatehouse_cache_requests_total",
    "Auth cache lookups by cache (user, session) and result (local: the process's own copy, "
    "hit: Redis, miss, unavailable)",
    ["cache", "result"],
)
RATE_LIMITED = Counter(
    "gatehouse_rate_limited_requests_total", "Requests refused by a rate limit", ["route"]
)
EMAILS = Counter(
    "gatehouse_emails_total",
    "Email delivery attempts by template and result "
    "(sent, duplicate, busy, postponed, retry, dead, skipped)",
    ["template", "result"],
)
JOBS = Counter(
    "gatehouse_jobs_total",
    "Jobs by queue and final state (finished, retried, postponed, dead)",
    ["queue", "state"],
)
DB_POOL_IN_USE = Gauge(
    "gatehouse_db_pool_connections_in_use",
    "Database connections checked out of the pool",
    multiprocess_mode="livesum",
)
DB_POOL_CAPACITY = Gauge(
    "gatehouse_db_pool_capacity",
    "Pool size plus max overflow (connections a process may open)",
    multiprocess_mode="livesum",
)
BUILD_INFO = Gauge(
    "gatehouse_build_info",
    "Build information (always 1)",
    ["version", "python"],
    multiprocess_mode="livemax",
)


@functools.cache
def cache_request(cache: str, result: str) -> Counter:
    """The counter child of one cache and result: bound once, as it counts every request."""
    return CACHE_REQUESTS.labels(cache=cache, result=result)


def _version() -> str:
    try:
        return version("gatehouse")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def route(req: Request | None = None) -> str:
    """The label of a request: its URL rule template (`/api/v1/users/<uuid:user_id>`)."""
    current = req if req is not None else request
    return current.url_rule.rule if current.url_rule is not None else "<unmatched>"


class HttpMetrics:
    """Requests by method, route template and status: latency (and count) and unhandled
    exceptions.

    The names and labels are prometheus-flask-exporter's (`gatehouse_http_request_*`), which
    this replaces: its hooks rebuilt label sets, matched path regexes and looked the children
    up on every request, some 12 % of the CPU of an authenticated read under gunicorn. Here the
    children of a label set are bound once, and one `after_request` hook does the rest. Its
    `gatehouse_http_request_total` counter is gone: the histogram's `_count` is the same number
    (every write to a multiprocess metric takes a lock and a file write).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.duration = Histogram(
            "gatehouse_http_request_duration_seconds",
            "Flask HTTP request duration in seconds",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.exceptions = Counter(
            "gatehouse_http_request_exceptions_total",
            "Total number of HTTP requests which resulted in an exception",
            ["method", "status"],
            registry=registry,
        )
        self._bound: dict[tuple[str, str, int], Any] = {}

    def init_app(self, app: Flask) -> None:
        app.before_request(self._start)
        app.after_request(self._record)
        app.teardown_request(self._exception)

    def observe(self, method: str, route_label: str, status: int, seconds: float) -> None:
        key = (method, route_label, status)
        child = self._bound.get(key)
        if child is None:
            child = self._bound[key] = self.duration.labels(
                method=method, route=route_label, status=status
            )
        child.observe(seconds)

    @staticmethod
    def _start() -> None:
        request.environ[STARTED_KEY] = default_timer()

    def _record(self, response: Response) -> Response:
        environ = request.environ
        started = environ.get(STARTED_KEY)
        if started is not None and not request.path.startswith(UNMEASURED_PATHS):
            elapsed = max(default_timer() - started, 0.0)
            self.observe(request.method, route(), response.status_code, elapsed)
            if UNEXPECTED_KEY in environ:  # answered by the catch-all handler (500 or 503)
                self.exceptions.labels(method=request.method, status=response.status_code).inc()
        return response

    def _exception(self, exc: BaseException | None) -> None:
        """An exception that escaped every handler (teardown sees no other kind)."""
        if exc is not None and not request.path.startswith(UNMEASURED_PATHS):
            self.exceptions.labels(method=request.method, status=500).inc()


class StateCollector(Collector):
    """Shared state read at scrape time: queues, dead letters and the outbox."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self._queues()
        yield from self._outbox()

    def _queues(self) -> Iterator[GaugeMetricFamily]:
        from webapp.extensions import redis_store

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
        from sqlalchemy import func, select

        from webapp.extensions import db
        from webapp.outbox.models import DEAD, ENQUEUED, PENDING, OutboxMessage

        messages = GaugeMetricFamily(
            "gatehouse_outbox_messages", "Unsent outbox messages by status", labels=["status"]
        )
        oldest = GaugeMetricFamily(
            "gatehouse_outbox_oldest_unsent_age_seconds",
            "Age of the oldest pending or enqueued outbox message (0 when none)",
        )
        up = GaugeMetricFamily("gatehouse_database_up", "1 when the database answered this scrape")
        try:
            with self.app.app_context():
                rows = db.session.execute(
                    select(OutboxMessage.status, func.count(), func.min(OutboxMessage.created_at))
                    .where(OutboxMessage.status.in_((PENDING, ENQUEUED, DEAD)))
                    .group_by(OutboxMessage.status)
                ).all()
                db.session.remove()
            by_status = {status: (count, first) for status, count, first in rows}
            for status in (PENDING, ENQUEUED, DEAD):
                messages.add_metric([status], by_status.get(status, (0, None))[0])
            firsts = [first for status, (_, first) in by_status.items() if status != DEAD and first]
            age = (datetime.now(UTC) - _aware(min(firsts))).total_seconds() if firsts else 0.0
            oldest.add_metric([], max(0.0, age))
            up.add_metric([], 1)
        except Exception:  # noqa: BLE001
            up.add_metric([], 0)
            yield up
            return
        yield from (messages, oldest, up)


class MultiProcessCollector(multiprocess.MultiProcessCollector):
    """prometheus_client's multiprocess collector, minus the files not initialised yet.

    A process creates its `<type>_<pid>.db` file empty and sizes it a moment later; a scrape that
    reads it in between fails with `struct.error`, so /metrics answered 500 whenever gunicorn
    (re)started a worker or the job worker forked a job process. Such a file holds no sample yet.
    """

    def collect(self) -> Iterable[Metric]:
        files = []
        for path in glob.glob(os.path.join(self._path, "*.db")):
            try:
                if os.path.getsize(path) > 0:
                    files.append(path)
            except FileNotFoundError:  # a live gauge's file, removed by mark_process_dead
                continue
        return self.merge(files, accumulate=True)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _track_pool(engine: Engine) -> None:
    pool: Any = engine.pool
    size = getattr(pool, "size", lambda: 0)() + max(0, getattr(pool, "_max_overflow", 0))
    DB_POOL_CAPACITY.inc(size)

    @event.listens_for(engine, "checkout")
    def _checkout(*_: Any) -> None:
        DB_POOL_IN_USE.inc()

    @event.listens_for(engine, "checkin")
    def _checkin(*_: Any) -> None:
        DB_POOL_IN_USE.dec()


def render(app: Flask) -> bytes:
    """The exposition of every process's samples plus the shared state, for one scrape."""
    state = CollectorRegistry()
    state.register(StateCollector(app))
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        samples = CollectorRegistry()
        MultiProcessCollector(samples)
        return generate_latest(samples) + generate_latest(state)
    from prometheus_client import REGISTRY

    http_registry = app.extensions["gatehouse_http_metrics"].registry
    return generate_latest(REGISTRY) + generate_latest(http_registry) + generate_latest(state)


def init_app(app: Flask) -> None:
    # A registry per app: tests build several apps in one process. Under gunicorn the samples go
    # to the multiprocess directory whatever the registry.
    http_metrics = HttpMetrics(CollectorRegistry())
    http_metrics.init_app(app)
    app.extensions["gatehouse_http_metrics"] = http_metrics
    BUILD_INFO.labels(version=_version(), python=platform.python_version()).set(1)

    from webapp.extensions import db, limiter

    with app.app_context():
        for engine in db.engines.values():
            _track_pool(engine)

    from observability.exposure import served_here

    settings = app.config["GATEHOUSE"]

    @app.get("/metrics")
    @limiter.exempt
    def metrics_endpoint() -> Response:
        if not served_here(settings):
            abort(404)  # off the public port: observability/exposure.py
        return Response(render(app), mimetype=CONTENT_TYPE_LATEST)
