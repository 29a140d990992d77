"""Traces: in-process, an app instrumented with an in-memory exporter (`traced`) and the sampler
its requests are decided with (`sampler_inner`); across processes, a real OTLP/HTTP receiver
(`otlp_receiver`) that the API and worker processes of a test export to."""

from __future__ import annotations

import gzip
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from flask import Flask
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.support.jobs import FAST_JOBS
from tests.support.waiting import free_port


@pytest.fixture
def make_traced(
    app: Flask, make_app: Callable[..., Flask], smtp_sink: Any, root_logging: logging.Logger
) -> Iterator[Callable[..., tuple[Flask, Any]]]:
    """make_app() apps (with `overrides`) instrumented with an in-memory exporter, with an access
    line for every request; the global instrumentation (SQLAlchemy's engine listeners, Redis)
    removed after. The apps themselves are the test's own."""
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from observability import tracing

    exporters: list[Any] = []

    def build(**overrides: Any) -> tuple[Flask, Any]:
        settings = {"smtp_url": smtp_sink.url, "access_log_sample": 1.0, **FAST_JOBS, **overrides}
        traced_app = make_app(**settings)
        exporter = InMemorySpanExporter()
        exporters.append(exporter)
        assert tracing.init_app(traced_app, None, exporter=exporter) is True
        return traced_app, exporter

    yield build
    EngineTracer.remove_all_event_listeners()
    RedisInstrumentor().uninstrument()
    for exporter in exporters:
        exporter.shutdown()


@pytest.fixture
def traced(make_traced: Callable[..., tuple[Flask, Any]]) -> tuple[Flask, Any]:
    """An app of `make_traced` with the test settings."""
    return make_traced()


@pytest.fixture
def sampler_inner() -> Iterator[Callable[[Any], None]]:
    """Sets the sampler the process's provider wraps (what `OTEL_TRACES_SAMPLER` names in
    production) for the test; the one it had is put back after."""
    from observability import tracing
    from observability.tracing_edge import GatehouseSampler

    sampler = tracing.provider().sampler
    assert isinstance(sampler, GatehouseSampler)
    original = sampler.inner

    def use(inner: Any) -> None:
        sampler.inner = inner

    yield use
    sampler.inner = original


@dataclass(frozen=True)
class ReceivedSpan:
    """A span as an OTLP/HTTP receiver decoded it (ids in hex, as log lines carry them)."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str  # SERVER, CLIENT, CONSUMER...
    attributes: dict[str, Any]


class OtlpReceiver:
    """A real OTLP/HTTP trace receiver on a free 127.0.0.1 port: accepts `POST /v1/traces`
    (protobuf, gzip or not), decodes `ExportTraceServiceRequest` and keeps the spans."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                receiver.accept(body)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def accept(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans = [
            ReceivedSpan(
                trace_id=span.trace_id.hex(),
                span_id=span.span_id.hex(),
                parent_span_id=span.parent_span_id.hex() or None,
                name=span.name,
                kind=Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                attributes={a.key: _value(a.value) for a in span.attributes},
            )
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]
        with self._lock:
            self.requests += 1
            self.spans.extend(spans)

    def received(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self.spans)


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()
