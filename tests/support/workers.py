"""Job worker processes in a test: `flask --app wsgi jobs worker` (forked work-horses, the
dispatcher thread) on the test database and Redis, sending through the test's SMTP server, with
leases and retries short enough for a test; every one started is SIGKILLed afterwards."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tests.support.database import signing_keys_json
from tests.support.smtp import SmtpSink
from webapp.config import settings_of

ROOT = Path(__file__).resolve().parents[2]


class WorkerProcess:
    def __init__(self, popen: subprocess.Popen[str], log_path: Path) -> None:
        self.popen = popen
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def horse_pids(self) -> list[int]:
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        return [int(p) for p in children.read_text().split()] if children.exists() else []

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines


@pytest.fixture
def start_worker(
    app: Flask, database_url: str, redis_url: str, smtp_sink: SmtpSink, tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `flask --app wsgi jobs worker` processes on the test database and Redis."""
    started: list[WorkerProcess] = []
    keys = signing_keys_json()

    def start(**settings: str) -> WorkerProcess:
        env = {
            **os.environ,
            "GATEHOUSE_ENV": "test",
            "SECRET_KEY": "test-secret-" + "x" * 32,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "SMTP_URL": smtp_sink.url,
            "JWT_KEYS": keys,
            # The test app's keyring: the worker opens the secrets the app sealed in the outbox.
            "ENCRYPTION_KEYS": settings_of(app).encryption_keys,
            "SMTP_TIMEOUT": "0.5",
            "JOBS_RETRY_BACKOFF": "0.05",
            "JOBS_DISPATCH_INTERVAL": "0.05",
            "JOBS_LEASE": "1",
            "LOG_LEVEL": "INFO",
            **settings,
        }
        log_path = tmp_path / f"worker-{len(started)}.log"
        with log_path.open("w") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "wsgi", "jobs", "worker"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        worker = WorkerProcess(popen, log_path)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        for pid in [*worker.horse_pids(), worker.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        worker.popen.wait(timeout=10)
