"""Traces in-process: an app instrumented with an in-memory exporter (`traced`), and the
sampler its requests are decided with (`sampler_inner`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from tests.support.jobs import FAST_JOBS


@pytest.fixture
def traced(
    app: Flask, make_app: Callable[..., Flask], smtp_sink: Any, root_logging: logging.Logger
) -> Iterator[tuple[Flask, Any]]:
    """A make_app() app instrumented with an in-memory exporter, with an access line for every
    request; the global instrumentation (SQLAlchemy's engine listeners, Redis) removed after.
    The app itself is the test's own."""
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from observability import tracing

    traced_app = make_app(smtp_url=smtp_sink.url, access_log_sample=1.0, **FAST_JOBS)
    exporter = InMemorySpanExporter()
    assert tracing.init_app(traced_app, None, exporter=exporter) is True
    yield traced_app, exporter
    EngineTracer.remove_all_event_listeners()
    RedisInstrumentor().uninstrument()
    exporter.shutdown()


@pytest.fixture
def sampler_inner() -> Iterator[Callable[[Any], None]]:
    """Sets the sampler the process's provider wraps (what `OTEL_TRACES_SAMPLER` names in
    production) for the test; the one it had is put back after."""
    from observability import tracing

    sampler = tracing.provider().sampler
    assert isinstance(sampler, tracing.GatehouseSampler)
    original = sampler.inner

    def use(inner: Any) -> None:
        sampler.inner = inner

    yield use
    sampler.inner = original
