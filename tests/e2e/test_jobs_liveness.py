"""A real `flask --app wsgi jobs worker` keeps its liveness file fresh (`jobs.health`), and the
probe command of k8s/base/worker-deployment.yaml passes against it; the same probe fails once
the worker is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from jobs import health
from tests.support.waiting import wait_until


def probe(path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, health.FILE_VARIABLE: str(path)}
    return subprocess.run(
        [sys.executable, "-m", "jobs.health"], env=env, capture_output=True, text=True, check=False
    )


def test_a_running_worker_passes_its_liveness_probe(smtp_sink, queue_email, start_worker, tmp_path):
    path = tmp_path / "alive"
    assert probe(path).returncode == 1
    worker = start_worker(JOBS_LIVENESS_FILE=str(path))

    wait_until(lambda: probe(path).returncode == 0, message=lambda: path.read_text())
    assert "alive for" in probe(path).stdout
    first = float(path.read_text())
    queue_email("verify_email", recipient="alive@example.com")
    smtp_sink.wait_for(1)
    wait_until(lambda: float(path.read_text()) > first + 1)  # the supervisor keeps it fresh
    left = health.seconds_left(path)
    assert left is not None
    assert 0 < left <= health.SUPERVISOR_ALLOWANCE + 1

    os.kill(worker.pid, signal.SIGTERM)
    worker.popen.wait(timeout=30)
    last = float(path.read_text())
    time.sleep(1.5)
    assert float(path.read_text()) == last  # nobody writes it any more: it runs out
    assert last < time.time() + health.SUPERVISOR_ALLOWANCE
