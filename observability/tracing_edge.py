"""Where a request's sampling is decided: once, at the WSGI edge, before Flask sees it.

Left to itself, OpenTelemetry's Flask instrumentation builds the request's attributes and starts
a span for every request, a non-recording one for each request the sampler drops: at a 10 % ratio,
nine requests in ten would pay for spans nobody receives (a quarter of a `GET /users/me`). Here
the sampler is asked once per request, with the caller's `traceparent` if it sent one:

- sampled: the request goes through the instrumented app, whose SERVER span is then given the
  same decision (`GatehouseSampler`), with all the instrumentation's attributes;
- not sampled: the request goes to the bare app, under a non-recording span with a valid span
  context whose sampled flag is off (the caller's, or fresh ids), so that the trace context
  written into an outbox message says "not sampled" to the job and the log lines still carry a
  trace id; the SQLAlchemy and Redis instrumentations are suppressed for it (no span at all).

The instrumentation's own `before_request` and `teardown_request` hooks run for sampled requests
only (`gate_hooks`), and its `before_request` hook runs first: the request's span covers the
other hooks too (the rate limit's Redis calls, a request the edge checks refuse).

Outside requests and jobs — the worker's outbox poll, RQ's housekeeping, a CLI command — a SQL
or Redis call has no parent: such a parentless CLIENT span is housekeeping, and
`GatehouseSampler` drops it whatever the ratio.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from functools import wraps
from typing import TYPE_CHECKING, Any

from opentelemetry import context, propagate, trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.instrumentation.wsgi import wsgi_getter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    Decision,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.util.http import ExcludeList

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from opentelemetry.context import Context
    from opentelemetry.trace import Link
    from opentelemetry.trace.span import TraceState
    from opentelemetry.util.types import Attributes

# Set in the environ of a request the edge sampled: the instrumentation's hooks run for it.
SAMPLED_KEY = "gatehouse.trace_sampled"
# The edge's decision for the request in hand, for the SERVER span the instrumentation starts.
_edge_decision: ContextVar[SamplingResult | None] = ContextVar("edge_decision", default=None)
_DROP = SamplingResult(Decision.DROP)
_ids = RandomIdGenerator()


def configured_sampler() -> Sampler:
    """The sampler `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` name, read by the SDK
    itself (a provider built only to ask it; it registers nothing to run at exit)."""
    return TracerProvider(shutdown_on_exit=False).sampler


class GatehouseSampler(Sampler):
    """The configured sampler, but: a request's SERVER span takes the decision the edge already
    made for that request, and a parentless CLIENT span (SQL or Redis outside any request or job:
    housekeeping) is dropped."""

    def __init__(self, inner: Sampler) -> None:
        self.inner = inner

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if kind is SpanKind.CLIENT or kind is SpanKind.SERVER:
            parent = trace.get_current_span(parent_context).get_span_context()
            if not parent.is_valid:
                if kind is SpanKind.CLIENT:
                    return _DROP
                decided = _edge_decision.get()
                if decided is not None:
                    return decided
        return self.inner.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"Gatehouse{{{self.inner.get_description()}}}"


class TracingEdge:
    """The WSGI app Flask serves: the instrumented app for sampled requests, the bare app under a
    non-recording span for the others (see the module's docstring)."""

    def __init__(
        self,
        bare: WSGIApplication,
        instrumented: WSGIApplication,
        sampler: Sampler,
        excluded: ExcludeList,
    ) -> None:
        self.bare = bare
        self.instrumented = instrumented
        self.sampler = sampler
        self.excluded = excluded

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        carried = propagate.extract(environ, getter=wsgi_getter)
        parent = trace.get_current_span(carried).get_span_context()
        trace_id = parent.trace_id if parent.is_valid else _ids.generate_trace_id()
        if not self.excluded.url_disabled(environ.get("PATH_INFO", "")):
            decision = self.sampler.should_sample(carried, trace_id, "HTTP", SpanKind.SERVER)
            if decision.decision is not Decision.DROP:  # recorded (sampled or not)
                environ[SAMPLED_KEY] = True
                decided = _edge_decision.set(decision)
                try:
                    return self.instrumented(environ, start_response)
                finally:
                    _edge_decision.reset(decided)
        if not parent.is_valid or parent.trace_flags.sampled:
            # A new trace, or one the caller sampled but that is not recorded here (a probe):
            # the spans under this request follow an unsampled span of our own.
            random = parent.trace_flags.random_trace_id if parent.is_valid else True
            flags = TraceFlags(TraceFlags.RANDOM_TRACE_ID if random else TraceFlags.DEFAULT)
            parent = SpanContext(trace_id, _ids.generate_span_id(), False, trace_flags=flags)
        token = context.attach(trace.set_span_in_context(NonRecordingSpan(parent), carried))
        try:
            # Nor do the SQLAlchemy and Redis instrumentations make (non-recording) spans for it.
            with suppress_instrumentation():
                return self.bare(environ, start_response)
        finally:
            context.detach(token)


def gate_hooks(funcs: list[Callable[..., Any]], before: list[Callable[..., Any]]) -> list[int]:
    """Make the hooks of `funcs` that are not in `before` (the instrumentation's) run only for
    requests the edge sampled; in place, so that the hooks keep their order. Their positions."""
    from flask import request

    gated_at = []
    for index, func in enumerate(funcs):
        if func in before:
            continue

        @wraps(func)
        def gated(*args: Any, _func: Callable[..., Any] = func) -> Any:
            if SAMPLED_KEY in request.environ:
                return _func(*args)
            return None

        funcs[index] = gated
        gated_at.append(index)
    return gated_at
