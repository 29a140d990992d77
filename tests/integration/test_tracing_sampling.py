"""Sampling decided once per request at the WSGI edge (`observability.tracing_edge`): a request
the sampler drops skips the Flask instrumentation entirely but runs under an unsampled span
context (its SQL and Redis calls are not traced as traces of their own, its job is not sampled,
its log lines keep a trace id); a sampled request, or one whose caller sampled it, keeps the
instrumentation's full span; parentless SQL and Redis calls (housekeeping) are never traced."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from flask import Flask
from opentelemetry.sdk.trace.sampling import (
    DEFAULT_OFF,
    DEFAULT_ON,
    ParentBasedTraceIdRatio,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import SpanKind

from observability.tracing_edge import SAMPLED_KEY
from tests.support.accounts import STRONG_PASSWORD
from webapp.extensions import db
from webapp.outbox.models import OutboxMessage

# What the Flask instrumentation keeps in the environ of a request it started a span for.
INSTRUMENTATION_SPAN_KEY = "opentelemetry-flask.span_key"
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


class CountingSampler(Sampler):
    """A sampler that counts how often it is asked."""

    def __init__(self, inner: Sampler) -> None:
        self.inner = inner
        self.asked = 0

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        self.asked += 1
        return self.inner.should_sample(*args, **kwargs)

    def get_description(self) -> str:
        return f"Counting{{{self.inner.get_description()}}}"


def _environs(app: Flask) -> list[dict[str, Any]]:
    """The WSGI environ of each request the app answers from now on, as its hooks saw it."""
    from flask import request

    seen: list[dict[str, Any]] = []

    @app.after_request
    def keep(response: Any) -> Any:
        seen.append(dict(request.environ))
        return response

    return seen


def _register(client: Any, headers: dict[str, str] | None = None) -> tuple[Any, str]:
    email = f"sampled-{uuid.uuid4().hex[:8]}@example.com"
    response = client.post(
        "/api/v1/auth/register",
        json={"email": email, "password": STRONG_PASSWORD, "name": "S"},
        headers=headers or {},
    )
    assert response.status_code == 201
    return response, email


def _outbox_trace(app: Flask, email: str) -> dict[str, Any]:
    with app.app_context():
        message = db.session.query(OutboxMessage).filter_by(recipient=email).one()
        trace_context = message.trace_context
        db.session.remove()
    assert trace_context is not None, "no trace context written into the outbox"
    return trace_context


def _access_line(json_lines: Callable[[], list[dict[str, Any]]], response: Any) -> dict[str, Any]:
    [line] = [
        line
        for line in json_lines()
        if line["logger"] == "gatehouse.access"
        and line["request_id"] == response.headers["X-Request-ID"]
    ]
    return line


def test_an_unsampled_request_skips_the_instrumentation_and_its_job_is_not_sampled(
    traced: tuple[Flask, Any],
    sampler_inner: Callable[[Any], None],
    smtp_sink: Any,
    work_jobs: Callable[..., int],
    json_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    app, exporter = traced
    counting = CountingSampler(DEFAULT_OFF)  # new traces dropped, callers' decisions followed
    sampler_inner(counting)
    environs = _environs(app)
    response, email = _register(app.test_client())
    [environ] = environs
    assert SAMPLED_KEY not in environ
    assert INSTRUMENTATION_SPAN_KEY not in environ, "the instrumentation started a span"
    # Asked once, by the edge: no span at all was begun for the request's SQL and Redis calls.
    assert counting.asked == 1

    # The context the job gets says "not sampled", with the trace id the log lines carry.
    traceparent = _outbox_trace(app, email)["traceparent"]
    version, trace_id, _span_id, flags = traceparent.split("-")
    assert version == "00"
    assert not int(flags, 16) & 1, traceparent  # not sampled
    assert _access_line(json_lines, response)["trace_id"] == trace_id

    sampler_inner(DEFAULT_ON)  # a new trace would now be sampled: the job must not start one
    work_jobs(app)
    assert smtp_sink.to(email), "the verification email was not sent"
    assert exporter.get_finished_spans() == ()


def test_a_caller_s_sampled_traceparent_gets_the_full_span(
    traced: tuple[Flask, Any],
    sampler_inner: Callable[[Any], None],
    json_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    app, exporter = traced
    sampler_inner(DEFAULT_OFF)  # only the caller's decision can sample this request
    environs = _environs(app)
    response, email = _register(
        app.test_client(), {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}
    )
    spans = exporter.get_finished_spans()
    [server] = [s for s in spans if s.kind == SpanKind.SERVER]
    assert server.name == "POST /api/v1/auth/register"
    assert format(server.context.trace_id, "032x") == CALLER_TRACE
    assert server.parent is not None
    assert format(server.parent.span_id, "016x") == CALLER_SPAN
    assert server.attributes["http.route"] == "/api/v1/auth/register"
    assert server.attributes["http.status_code"] == 201
    assert server.attributes["http.method"] == "POST"
    sql = [s for s in spans if s.attributes.get("db.system") == "postgresql"]
    assert sql
    assert all(s.context.trace_id == server.context.trace_id for s in sql)
    access = _access_line(json_lines, response)
    assert access["trace_id"] == CALLER_TRACE
    assert access["span_id"] == format(server.context.span_id, "016x")
    assert _outbox_trace(app, email)["traceparent"].startswith(f"00-{CALLER_TRACE}-")
    assert SAMPLED_KEY in environs[0]
    assert INSTRUMENTATION_SPAN_KEY in environs[0]


def test_a_caller_s_unsampled_traceparent_is_followed(
    traced: tuple[Flask, Any], sampler_inner: Callable[[Any], None]
) -> None:
    app, exporter = traced
    sampler_inner(DEFAULT_ON)  # a new trace would be sampled; this one the caller did not
    environs = _environs(app)
    _response, email = _register(
        app.test_client(), {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-00"}
    )
    assert INSTRUMENTATION_SPAN_KEY not in environs[0]
    assert exporter.get_finished_spans() == ()
    # The job continues the caller's trace, unsampled.
    assert _outbox_trace(app, email)["traceparent"] == f"00-{CALLER_TRACE}-{CALLER_SPAN}-00"


def test_a_sampled_request_is_traced_whole_at_the_configured_ratio(
    traced: tuple[Flask, Any], sampler_inner: Callable[[Any], None]
) -> None:
    """The edge's decision is the request's: its SERVER span is not sampled a second time (which
    would keep a quarter of the requests at a ratio of one half), and no SQL or Redis call of any
    request, sampled or not, makes a trace of its own."""
    app, exporter = traced
    client = app.test_client()
    sampler_inner(ParentBasedTraceIdRatio(0.5))
    for _ in range(200):  # /ready: SQL and Redis on every request
        assert client.get("/ready").status_code == 200
    spans = exporter.get_finished_spans()
    servers = [s for s in spans if s.kind == SpanKind.SERVER]
    assert 70 <= len(servers) <= 130, len(servers)  # 100 ± 4.2 standard deviations
    assert all(s.attributes["http.route"] == "/ready" for s in servers)
    clients = [s for s in spans if s.kind == SpanKind.CLIENT]
    for server in servers:  # each sampled request has its SQL and its Redis PING
        children = [s for s in clients if s.parent and s.parent.span_id == server.context.span_id]
        assert {s.attributes.get("db.system") for s in children} == {"postgresql", "redis"}
    traced_ids = {s.context.trace_id for s in servers}
    assert all(s.parent is not None for s in clients)
    assert all(s.context.trace_id in traced_ids for s in clients)


def test_a_sampled_request_s_span_covers_the_hooks_before_it(
    make_traced: Callable[..., tuple[Flask, Any]],
    sampler_inner: Callable[[Any], None],
    member: Any,
) -> None:
    """The default rate limit is checked in a `before_request` hook registered before the
    instrumentation's: its Redis calls are inside the request's span, not dropped as
    parentless."""
    from webapp.http.ratelimit import limiter

    limiter._storage_dead = False  # a previous test's app may have left it "dead"
    app, exporter = make_traced(ratelimit_enabled=True, ratelimit_default="1000 per minute")
    sampler_inner(DEFAULT_ON)
    assert app.test_client().get("/api/v1/users/me", headers=member.headers).status_code == 200
    spans = exporter.get_finished_spans()
    [server] = [s for s in spans if s.kind == SpanKind.SERVER]
    limiter_calls = [
        s
        for s in spans
        if s.attributes.get("db.system") == "redis" and s.name in ("EVALSHA", "INCRBY", "EXPIRE")
    ]
    assert limiter_calls, [s.name for s in spans]
    assert all(s.parent is not None for s in limiter_calls)
    assert all(s.parent.span_id == server.context.span_id for s in limiter_calls)


def test_the_liveness_probe_and_parentless_calls_are_not_traced(
    traced: tuple[Flask, Any], sampler_inner: Callable[[Any], None]
) -> None:
    app, exporter = traced
    sampler_inner(DEFAULT_ON)
    client = app.test_client()
    assert client.get("/health").status_code == 200
    with app.app_context():  # SQL and Redis outside any request or job: housekeeping
        db.session.execute(db.text("SELECT 1"))
        db.session.remove()
        app.extensions["gatehouse_redis"].client.ping()
    assert exporter.get_finished_spans() == ()
