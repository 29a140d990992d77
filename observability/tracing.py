"""OpenTelemetry tracing for Flask, SQLAlchemy, Redis and RQ jobs.

Off by default at no cost (no provider, no instrumentation). With `OTEL_EXPORTER_OTLP_ENDPOINT`
set, spans are batched to that collector over OTLP/HTTP. Tests pass their own exporter. Which
requests are traced is decided once per request at the WSGI edge (`observability.tracing_edge`).
Jobs carry the W3C trace context of the request that caused them in their meta
(`inject_context` / `job_span`), so a job's span is a child of the request's span.

Spans are exported by a background thread every few seconds; what is still queued when a process
ends is exported then, waiting at most `EXIT_FLUSH_SECONDS` (`end_within`): at exit for every
process, and before `os._exit` for the worker's job process (`flush`), which skips exit handlers.
Without the bound, a command whose collector is down waits for the exporter's retries (10 s).
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask
from opentelemetry import context, propagate, trace
from opentelemetry.metrics import get_meter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.semconv.metrics import MetricInstruments

SERVICE_NAME = "gatehouse"
tracer = trace.get_tracer("gatehouse")
# Probes and scrapes: never traced (their SQL and Redis calls neither).
EXCLUDED_URLS = "health,metrics"
EXIT_FLUSH_SECONDS = 2.0
_provider: TracerProvider | None = None
_endpoints: set[str] = set()


def provider(exporter: SpanExporter | None = None, endpoint: str | None = None) -> TracerProvider:
    """The process's tracer provider, created once (OpenTelemetry allows one global provider)."""
    global _provider
    if _provider is None:
        # Tracing on only: it loads OpenTelemetry's WSGI instrumentation.
        from observability.tracing_edge import GatehouseSampler, configured_sampler

        _provider = TracerProvider(
            sampler=GatehouseSampler(configured_sampler()),
            resource=Resource.create({"service.name": SERVICE_NAME}),
            shutdown_on_exit=False,  # our own exit handler bounds the wait
        )
        trace.set_tracer_provider(_provider)
        atexit.register(end_within, _provider.shutdown, EXIT_FLUSH_SECONDS)
    if exporter is not None:
        _provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif endpoint and endpoint not in _endpoints:  # one exporter per collector, however many apps
        _endpoints.add(endpoint)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # tracing on: 40 ms
            OTLPSpanExporter,
        )

        _provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces"))
        )
    return _provider


def flush() -> None:
    """Export the spans still queued, waiting at most `EXIT_FLUSH_SECONDS`: for a process about
    to end with `os._exit` (the worker's job process), which skips the exit handlers."""
    if _provider is not None:
        end_within(_provider.force_flush, EXIT_FLUSH_SECONDS)


def end_within(export: Callable[[], object], seconds: float) -> bool:
    """Run `export` (a flush or a shutdown), giving up on it after `seconds`; True if it ended.

    In a daemon thread, so that a process can end while the exporter still retries against a
    collector that is down: the SDK's own timeouts do not bound a flush (the exporter retries
    until its own 10 s deadline)."""
    worker = threading.Thread(target=export, name="otel-exit-flush", daemon=True)
    worker.start()
    worker.join(seconds)
    return not worker.is_alive()


def init_app(app: Flask, endpoint: str | None, exporter: SpanExporter | None = None) -> bool:
    """Instrument the app when an endpoint (or a test exporter) is given; otherwise do nothing."""
    if not endpoint and exporter is None:
        return False
    from opentelemetry.instrumentation.flask import FlaskInstrumentor  # tracing on only: 40 ms
    from opentelemetry.instrumentation.redis import RedisInstrumentor  # tracing on only: 11 ms
    from opentelemetry.util.http import parse_excluded_urls

    from observability.tracing_edge import TracingEdge, gate_hooks  # tracing on only

    tracer_provider = provider(exporter, endpoint)
    bare = app.wsgi_app
    before = list(app.before_request_funcs.get(None, ()))
    teardown = list(app.teardown_request_funcs.get(None, ()))
    # No SQL commenter: nothing here reads the request context it attaches, and attaching it is
    # a context switch on every request (≈ 50-70 µs of a `/users/me` in an in-process A/B).
    FlaskInstrumentor().instrument_app(
        app,
        tracer_provider=tracer_provider,
        excluded_urls=EXCLUDED_URLS,
        enable_commenter=False,
    )
    hooks = app.before_request_funcs[None]
    # The span starts before the app's other hooks, so that they are inside the request's trace.
    for moved, index in enumerate(gate_hooks(hooks, before)):
        hooks.insert(moved, hooks.pop(index))
    gate_hooks(app.teardown_request_funcs[None], teardown)
    # Flask's documented way to wrap the WSGI app; mypy sees the assignment of a method.
    app.wsgi_app = TracingEdge(  # type: ignore[method-assign]
        bare, app.wsgi_app, tracer_provider.sampler, parse_excluded_urls(EXCLUDED_URLS)
    )
    sqlalchemy = app.extensions.get("sqlalchemy")  # Flask-SQLAlchemy's engines, if any
    if sqlalchemy is not None:
        with app.app_context():
            instrument_engines(list(sqlalchemy.engines.values()), tracer_provider)
    if not RedisInstrumentor().is_instrumented_by_opentelemetry:
        RedisInstrumentor().instrument(tracer_provider=tracer_provider)
    return True


def instrument_engines(engines: list[Any], tracer_provider: TracerProvider) -> None:
    """A span per SQL statement on these engines (OpenTelemetry's SQLAlchemy `EngineTracer`).

    Not through `SQLAlchemyInstrumentor().instrument(engines=...)`: it declares
    "sqlalchemy < 2.1" and on the pinned 2.1 logs an error and instruments nothing, and past that
    check it also patches `sqlalchemy.ext.asyncio`, which needs greenlet (not installed). The
    engine-level event hooks it attaches work on 2.1 (tests/integration/test_observability.py).
    """
    from opentelemetry.instrumentation.sqlalchemy import __name__ as scope  # tracing on only
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer  # tracing on: 34 ms
    from opentelemetry.instrumentation.sqlalchemy.version import __version__  # tracing on only

    sql_tracer = trace.get_tracer(scope, __version__, tracer_provider)
    connections_usage = get_meter(scope, __version__).create_up_down_counter(
        name=MetricInstruments.DB_CLIENT_CONNECTIONS_USAGE,
        unit="connections",
        description="The number of connections that are currently in the state described.",
    )
    for engine in engines:
        EngineTracer(sql_tracer, engine, connections_usage)


def inject_context() -> dict[str, str]:
    """The current trace context as W3C headers, to store in a job's meta."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


@contextmanager
def job_span(name: str, carrier: dict[str, str] | None, **attributes: Any) -> Iterator[Any]:
    """A span for a job, child of the request span whose context the job carries."""
    parent = propagate.extract(carrier or {})
    token = context.attach(parent)
    try:
        with tracer.start_as_current_span(name, kind=trace.SpanKind.CONSUMER) as span:
            for key, value in attributes.items():
                span.set_attribute(key, value)
            yield span
    finally:
        context.detach(token)
