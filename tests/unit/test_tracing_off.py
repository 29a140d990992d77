"""Tracing off costs nothing: the modules every process imports (`observability.tracing`, for the
outbox's `inject_context` and the jobs' `job_span`) do not load the OpenTelemetry
instrumentations, which load only when tracing is turned on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_importing_tracing_loads_no_instrumentation() -> None:
    code = (
        "import sys, observability.tracing, webapp.outbox.service, jobs.tasks; "
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.instrumentation')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
