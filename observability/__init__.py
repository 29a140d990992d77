"""Observability: logs with correlation ids (JSON, or text for a developer's terminal),
Prometheus metrics, OpenTelemetry traces.

`init_app(app, ...)` wires all three into a Flask application; jobs use the same modules
directly. Nothing here knows Gatehouse's application: the application passes its settings in and
adds its own `/metrics` endpoint (`webapp.ops.metrics`).
"""

from __future__ import annotations

from timeit import default_timer

from flask import Flask, request

from observability.context import STARTED_KEY


def init_app(
    app: Flask,
    *,
    log_level: str,
    log_format: str = "json",
    access_log_sample: float = 0.1,
    access_log_slow_ms: float = 100.0,
    metrics_port: int | None,
    otel_endpoint: str | None,
) -> None:
    """`log_format`: `json` (one JSON object per line, for collectors) or `text` (development).
    The access log keeps every 4xx, 5xx and request slower than `access_log_slow_ms`, and that
    share of the others (`access_log_sample`, 0 to 1)."""
    # Here, not at the top: gunicorn's master loads observability.gunicorn_logging, which runs
    # this file first, and must not load the metrics (prometheus_client) or tracing.
    from observability import exposure, metrics, tracing  # see above
    from observability import logging as log_setup  # see above

    log_setup.configure(log_level, log_format)
    app.before_request(_stamp_start)
    log_setup.init_access_log(app, sample=access_log_sample, slow_ms=access_log_slow_ms)
    metrics.init_app(app)
    exposure.init_app(app, metrics_port)
    tracing.init_app(app, otel_endpoint)


def _stamp_start() -> None:
    """When Flask began the request: the access log's duration. (A request refused by an earlier
    hook keeps the time that hook stamped, `webapp.http.hostile`.)"""
    request.environ[STARTED_KEY] = default_timer()
