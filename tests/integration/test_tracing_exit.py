"""Short-lived processes do not wait on a collector that is down: a CLI command records no
housekeeping spans to export, and whatever a process still has queued at its end is given
`EXIT_FLUSH_SECONDS`, not the exporter's ten seconds of retries."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from flask import Flask
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from observability.tracing import EXIT_FLUSH_SECONDS, end_within
from tests.support.database import signing_keys_json
from tests.support.waiting import free_port
from webapp.config import settings_of

ROOT = Path(__file__).resolve().parents[2]


def test_a_cli_command_with_no_collector_up_ends_without_waiting_on_the_exporter(
    app: Flask, database_url: str, redis_url: str
) -> None:
    env = {
        **os.environ,
        "GATEHOUSE_ENV": "test",
        "SECRET_KEY": "test-secret-" + "x" * 32,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "JWT_KEYS": signing_keys_json(),
        "ENCRYPTION_KEYS": settings_of(app).encryption_keys,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # nobody listens
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "1.0",
    }
    started = time.monotonic()
    # A pass of the outbox dispatcher: SQL and Redis, outside any request or job.
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "jobs", "dispatch"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "Failed to export" not in result.stdout + result.stderr  # nothing was even tried
    # Start-up is 1-2 s here; the exporter's retries against the closed port took 7-8 s more.
    assert elapsed < 6.0, (elapsed, result.stdout[-3000:], result.stderr[-3000:])


def test_what_is_queued_at_the_end_gets_a_bounded_wait() -> None:
    provider = TracerProvider(shutdown_on_exit=False)
    endpoint = f"http://127.0.0.1:{free_port()}/v1/traces"  # nobody listens
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    with provider.get_tracer("test").start_as_current_span("queued"):
        pass
    started = time.monotonic()
    ended = end_within(provider.shutdown, EXIT_FLUSH_SECONDS)
    elapsed = time.monotonic() - started
    assert not ended  # the exporter was still retrying...
    assert EXIT_FLUSH_SECONDS <= elapsed < EXIT_FLUSH_SECONDS + 1.0  # ...and was not waited for
