"""Traces that reach a collector, and nothing else: the production API (gunicorn) and the
production job worker (supervisor and forked job process) export to a real OTLP/HTTP receiver,
every trace sampled. A registration's request span arrives with its SQL and Redis children, the
email job's span arrives under it (through the outbox) even though the job process ends with
`os._exit`, the access line carries the trace id, and the idle worker — its outbox poll and RQ's
housekeeping — sends nothing."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask

from tests.support.accounts import STRONG_PASSWORD
from tests.support.gunicorn import serve
from tests.support.smtp import SmtpSink
from tests.support.tracing import OtlpReceiver, ReceivedSpan
from tests.support.waiting import wait_until
from webapp.config import settings_of

IDLE_SECONDS = 3.0


def _tracing(receiver: OtlpReceiver) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "1.0",
    }


def _register(port: int, email: str) -> str:
    """POST /api/v1/auth/register; its request id."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/auth/register",
        data=json.dumps({"email": email, "password": STRONG_PASSWORD, "name": "T"}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
        assert response.status == 201
        return str(response.headers["X-Request-ID"])


def _started(worker: Any) -> bool:
    return any(line.get("message") == "job worker starting" for line in worker.log_lines())


def _descends(span: ReceivedSpan, ancestor: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> bool:
    parent = span.parent_span_id
    while parent is not None:
        if parent == ancestor.span_id:
            return True
        parent = by_id[parent].parent_span_id if parent in by_id else None
    return False


def test_a_registration_and_its_email_job_arrive_as_one_trace_and_housekeeping_never(
    app: Flask,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    smtp_sink: SmtpSink,
    otlp_receiver: OtlpReceiver,
    start_worker: Callable[..., Any],
) -> None:
    tracing = _tracing(otlp_receiver)
    worker = start_worker(**tracing)
    with serve(
        database_url,
        redis_url,
        tmp_path,
        LOG_LEVEL="INFO",
        ACCESS_LOG_SAMPLE="1",
        RATELIMIT_ENABLED="true",  # as production: the rate limit's Redis calls are in the trace
        UNSAFE_PRODUCTION_WITHOUT_RATELIMIT="false",
        # The worker's keyring: it opens the secrets this API seals into the outbox.
        ENCRYPTION_KEYS=settings_of(app).encryption_keys,
        **tracing,
    ) as (_proc, port):
        wait_until(
            lambda: any(
                line.get("message") == "job worker starting" for line in worker.log_lines()
            ),
            timeout=30,
            message=lambda: worker.log_path.read_text(),
        )
        time.sleep(IDLE_SECONDS)  # the idle worker polls the outbox and RQ keeps house
        email = f"traced-{uuid.uuid4().hex[:8]}@example.com"
        request_id = _register(port, email)
        wait_until(lambda: smtp_sink.to(email), timeout=30, message="no verification email")
        # A warm shutdown: the job process ends with os._exit, the supervisor normally.
        worker.popen.send_signal(signal.SIGTERM)
        assert worker.popen.wait(timeout=30) == 0, worker.log_path.read_text()

        def registration_trace() -> tuple[ReceivedSpan, list[ReceivedSpan]] | None:
            spans = otlp_receiver.received()
            servers = [
                s
                for s in spans
                if s.kind == "SERVER" and s.attributes.get("http.route") == "/api/v1/auth/register"
            ]
            if not servers:
                return None
            return servers[0], [s for s in spans if s.trace_id == servers[0].trace_id]

        # The API exports on its batch schedule (5 s).
        found = wait_until(registration_trace, timeout=20, message="no registration span")
        server, in_trace = found
        access_log = (tmp_path / "gunicorn.log").read_text().splitlines()

    by_id = {s.span_id: s for s in otlp_receiver.received()}
    sql = [s for s in in_trace if s.attributes.get("db.system") == "postgresql"]
    redis_spans = [s for s in in_trace if s.attributes.get("db.system") == "redis"]
    assert any(s.parent_span_id == server.span_id for s in sql), "no SQL child of the request"
    assert any(_descends(s, server, by_id) for s in redis_spans), "no Redis child of the request"

    # The email job continues the request's trace: its parent is the span the outbox recorded.
    jobs = [s for s in in_trace if s.kind == "CONSUMER"]
    assert [s.name for s in jobs] == ["email.deliver"], [s.name for s in in_trace]
    [job] = jobs
    assert job.parent_span_id == server.span_id
    assert any(
        s.attributes.get("db.system") == "postgresql" and _descends(s, job, by_id) for s in in_trace
    )

    # The access line of the request carries its trace id.
    [access] = [
        json.loads(line)
        for line in access_log
        if line.startswith("{") and '"gatehouse.access"' in line and request_id in line
    ]
    assert access["trace_id"] == server.trace_id

    # Nothing but requests starts a trace: no parentless SQL or Redis span of the idle worker
    # (or of anyone), and the only job span is the one under the registration.
    roots = [s for s in otlp_receiver.received() if s.parent_span_id is None]
    assert roots, "nothing arrived"
    assert {s.kind for s in roots} == {"SERVER"}, [
        (s.kind, s.name) for s in roots if s.kind != "SERVER"
    ]
    assert [s for s in otlp_receiver.received() if s.kind == "CONSUMER"] == [job]
