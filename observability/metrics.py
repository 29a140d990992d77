"""Prometheus metrics: Gatehouse's own in the `gatehouse_` namespace, and HTTP request metrics.

HTTP request metrics are prometheus-flask-exporter's (`flask_http_request_*`), labelled by URL rule
*template* (never the raw path); requests the catch-all problem handler answers are counted here
(`gatehouse_http_unexpected_errors_total`), as Flask's teardown never sees their exception.
Counters of business events are incremented where the events happen. State that is shared by
every process (queue depth, dead letters, outbox backlog) is read at scrape time by collectors the
application passes to `exposition` (Gatehouse's: `webapp.ops.metrics`), so it is right however
many API processes and workers run. Under gunicorn
(`PROMETHEUS_MULTIPROC_DIR` set) every process writes its samples to that directory and `/metrics`
aggregates them (see gunicorn.conf.py for the directory's cleanup and dead-worker marking).
"""

from __future__ import annotations

import functools
import glob
import os
import platform
import time
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from flask import Flask, Request, request
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_flask_exporter import PrometheusMetrics
from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics
from sqlalchemy import event
from sqlalchemy.engine import Engine

# Scrapes, probes and static assets would drown the API's own latency. One pattern (the exporter
# tries each of a list in turn on every request), matched at the start of the path.
EXCLUDED_PATHS = r"/(?:metrics|health|ready)(?:/|$)|/api/docs/assets/"
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
OAUTH_TOKEN_GRANTS = Counter(
    "gatehouse_oauth_token_grants_total",
    "OAuth token endpoint requests by grant (authorization_code, refresh_token, "
    "client_credentials, unsupported) and result (success, the OAuth error code, or "
    "code_reused / refresh_reused, which revoked what the credential had issued)",
    ["grant", "result"],
)
# Every answer of the authorization flow (GET /oauth/authorize, and the sign-in and consent forms
# that carry the request on): `code_issued` sent the browser back to the client with a code,
# `login_page` / `consent_page` showed that page (the flow goes on), an OAuth error code sent it
# back with that error, `error_page` refused it without a redirect (client or redirect URI in
# doubt). The few values are fixed by the code: no client id ever becomes a label.
OAUTH_AUTHORIZATIONS = Counter(
    "gatehouse_oauth_authorizations_total",
    "Authorization flow answers by result (code_issued, login_page, consent_page, error_page, "
    "or the OAuth error sent to the client: login_required, consent_required, access_denied, "
    "invalid_request, invalid_scope, unauthorized_client, unsupported_response_type, ...)",
    ["result"],
)
# Sign-ins through the provider's pages. They go through the API's login service, so they are
# in gatehouse_logins_total too; this one tells the channel apart and adds what only a page can
# refuse (a form without its CSRF token, a form that does not validate, a spent rate limit).
OAUTH_SIGNINS = Counter(
    "gatehouse_oauth_signins_total",
    "Sign-in attempts through the provider's pages by result (success, mfa_required, "
    "invalid_credentials, locked, unverified, invalid_mfa_token, invalid_mfa_code, and the "
    "pages' own: invalid_form, csrf_failed, rate_limited)",
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
# One per webhook attempt (retries each count): `delivered` a 2xx, `failed` any other answer or
# no answer (retried), `refused` the SSRF guard refused the target (retried), `gone` a 410 (the
# endpoint disabled), `dead` a failure on the last try. Messages skipped without an attempt (their
# endpoint deleted or disabled) are not counted. `event_type` is one of the few event types.
WEBHOOK_DELIVERIES = Counter(
    "gatehouse_webhook_deliveries_total",
    "Webhook delivery attempts by event type and result (delivered, failed, refused, gone, dead)",
    ["event_type", "result"],
)
# An attempt is bounded by the client's 15 s for the whole exchange (5 s to connect): the top
# buckets tell slow receivers from timeouts.
WEBHOOK_DELIVERY_DURATION = Histogram(
    "gatehouse_webhook_delivery_duration_seconds",
    "Time of one webhook attempt: resolving the host, connecting, the POST and reading the answer",
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0),
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
# Getting a connection: from a free pooled one (its pre-ping round trip) through opening a new one
# to waiting for one to come back, up to DB_POOL_TIMEOUT (5 s), where the checkout fails.
DB_POOL_CHECKOUT = Histogram(
    "gatehouse_db_pool_checkout_seconds",
    "Time to get a connection from the pool (waiting for a free one, or opening one), failed "
    "checkouts included",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
# The API's gunicorn threads (webapp.gunicorn_worker): how many serve a request right now, of how
# many. The requests of the metrics listener (the scrape itself) are not counted.
GUNICORN_THREADS = Gauge(
    "gatehouse_gunicorn_threads",
    "Request threads of the live gunicorn workers",
    multiprocess_mode="livesum",
)
GUNICORN_THREADS_BUSY = Gauge(
    "gatehouse_gunicorn_threads_busy",
    "gunicorn threads serving an API request (not a scrape) right now",
    multiprocess_mode="livesum",
)
UNEXPECTED_ERRORS = Counter(
    "gatehouse_http_unexpected_errors_total",
    "Requests answered by the catch-all problem handler: an exception nothing expected "
    "(status 500: a bug; 503: the database unreachable)",
    ["method", "status"],
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


def init_http_metrics(app: Flask, registry: CollectorRegistry | None = None) -> PrometheusMetrics:
    """prometheus-flask-exporter's request metrics for `app`, by URL rule template.

    A registry per app: tests build several apps in one process, and the exporter registers its
    `flask_exporter_info` first, so a second app on one registry gets a `ValueError` there, which
    the exporter swallows and then installs no hook at all. Under gunicorn
    (`PROMETHEUS_MULTIPROC_DIR` set) the samples go to the multiprocess directory whatever the
    registry, and `exposition` reads them there. `path=None`: the application serves `/metrics`
    itself, with its scrape-time collectors. `registry` (tests): one already used by another app
    is refused rather than left uncounted.
    """
    options: dict[str, Any] = {
        "path": None,
        "group_by": "url_rule",
        "excluded_paths": EXCLUDED_PATHS,
        "buckets": LATENCY_BUCKETS,
        "registry": registry if registry is not None else CollectorRegistry(),
    }
    before = app.before_request_funcs.setdefault(None, [])
    existing = len(before)
    exporter: PrometheusMetrics
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        exporter = GunicornInternalPrometheusMetrics.for_app_factory(**options)
        exporter.init_app(app)
    else:
        exporter = PrometheusMetrics(app, **options)
    if len(before) == existing:
        raise RuntimeError("prometheus-flask-exporter installed no request hook on this app")
    # The exporter times a request from its own before_request hook and records no latency for
    # a request that hook never saw: one answered by an earlier hook (hostile input refused, a
    # rate limit). Its hook goes first, so those are measured like any answer.
    before[:] = before[existing:] + before[:existing]
    return exporter


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
        merged: Iterable[Metric] = self.merge(files, accumulate=True)
        return merged


def track_pool(engine: Engine) -> None:
    """Count the connections `engine`'s pool can hold, how many are checked out, and how long
    getting one takes."""
    pool: Any = engine.pool
    size = getattr(pool, "size", lambda: 0)() + max(0, getattr(pool, "_max_overflow", 0))
    DB_POOL_CAPACITY.inc(size)
    # SQLAlchemy has no event before a checkout (`checkout` fires once it got one), so the
    # engine's own `raw_connection`, which every Connection calls for its connection, is timed.
    # On the engine, not its pool: `dispose()` replaces the pool.
    raw_connection = engine.raw_connection

    def timed_raw_connection() -> Any:
        started = time.perf_counter()
        try:
            return raw_connection()
        finally:
            DB_POOL_CHECKOUT.observe(time.perf_counter() - started)

    engine.raw_connection = timed_raw_connection  # type: ignore[method-assign]

    @event.listens_for(engine, "checkout")
    def _checkout(*_: Any) -> None:
        DB_POOL_IN_USE.inc()

    @event.listens_for(engine, "checkin")
    def _checkin(*_: Any) -> None:
        DB_POOL_IN_USE.dec()


def exposition(app: Flask, *shared: Collector) -> bytes:
    """One scrape: every process's samples (or this process's and the app's HTTP metrics),
    then the `shared` collectors, which read state every process shares at scrape time."""
    state = CollectorRegistry()
    for collector in shared:
        state.register(collector)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        samples = CollectorRegistry()
        MultiProcessCollector(samples)
        return generate_latest(samples) + generate_latest(state)
    http_registry = app.extensions["gatehouse_http_metrics"].registry
    return generate_latest(REGISTRY) + generate_latest(http_registry) + generate_latest(state)


def init_app(app: Flask) -> None:
    """HTTP metrics for `app`, the build info, and the pools of its Flask-SQLAlchemy engines.
    The `/metrics` endpoint is the application's to add (it knows its shared state)."""
    app.extensions["gatehouse_http_metrics"] = init_http_metrics(app)
    BUILD_INFO.labels(version=_version(), python=platform.python_version()).set(1)
    # The series the "any occurrence" alerts read with increase(): exported at 0 from the start,
    # so the first reuse is a rise Prometheus sees, not a new series whose first sample is 1.
    TOKEN_REFRESHES.labels(result="reuse_detected")
    OAUTH_TOKEN_GRANTS.labels(grant="refresh_token", result="refresh_reused")
    OAUTH_TOKEN_GRANTS.labels(grant="authorization_code", result="code_reused")
    sqlalchemy = app.extensions.get("sqlalchemy")
    if sqlalchemy is not None:
        with app.app_context():
            for engine in sqlalchemy.engines.values():
                track_pool(engine)
