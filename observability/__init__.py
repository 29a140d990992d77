"""Observability: JSON logs with correlation ids, Prometheus metrics, OpenTelemetry traces.

`init_app(app)` wires all three into a Flask application; jobs use the same modules directly.
"""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from observability import exposure, metrics, tracing
    from observability import logging as log_setup

    settings = app.config["GATEHOUSE"]
    log_setup.configure(settings.log_level)
    log_setup.init_access_log(app)
    metrics.init_app(app)
    exposure.init_app(app)
    tracing.init_app(app, settings.otel_exporter_otlp_endpoint)
