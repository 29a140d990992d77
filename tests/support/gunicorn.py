"""The production server in a test: `gunicorn -c gunicorn.conf.py wsgi:app` (two workers of four
threads) on the migrated test database, and a minimal HTTP/1.1 reader on raw sockets so that every
outcome of a request is known exactly."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from tests.support.database import signing_keys_json
from tests.support.waiting import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]


class NoResponse(Exception):
    """The connection ended before a complete response; `received` bytes had arrived."""

    def __init__(self, received: int, reason: str) -> None:
        super().__init__(reason)
        self.received = received


def read_response(sock: socket.socket) -> tuple[int, dict[str, str]]:
    buffer = b""
    try:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise NoResponse(len(buffer), "closed before the headers")
            buffer += chunk
        head, _, body = buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise NoResponse(len(buffer) + len(body), "closed inside the body")
            body += chunk
    except OSError as exc:  # reset, broken pipe, timeout
        raise NoResponse(len(buffer), f"{type(exc).__name__}: {exc}") from None
    return status, headers


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                    found.add(int(entry.name))
    return found


@pytest.fixture
def gunicorn(
    app: Flask, database_url: str, redis_url: str, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """The production command with two workers, on the migrated test database."""
    with serve(database_url, redis_url, tmp_path) as served:
        yield served


@contextlib.contextmanager
def serve(
    database_url: str, redis_url: str, tmp_path: Path, *, port: int | None = None, **settings: str
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`gunicorn -c gunicorn.conf.py wsgi:app` in production mode, with `settings` (environment
    variables) on top; its output in `tmp_path / "gunicorn.log"`, SIGKILLed after. `port` when
    the settings must name it (an issuer URL), else a free one."""
    port = port or free_port()
    (tmp_path / "metrics").mkdir()
    drop = ("GUNICORN_", "JWT_KEYS", "API_KEY_", "SMTP_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(
        GATEHOUSE_ENV="production",
        SECRET_KEY=secrets.token_urlsafe(48),  # production refuses non-random values
        ENCRYPTION_KEYS="t1:" + base64.b64encode(os.urandom(32)).decode(),
        JWT_KEYS=signing_keys_json(),
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        RATELIMIT_ENABLED="false",
        UNSAFE_PRODUCTION_WITHOUT_RATELIMIT="true",
        PUBLIC_BASE_URL="https://gatehouse.test",
        LOG_LEVEL="WARNING",
        BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY="2",
        GUNICORN_THREADS="4",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    )
    env.update(settings)
    log = (tmp_path / "gunicorn.log").open("wb")
    gunicorn_bin = str(Path(sys.executable).parent / "gunicorn")
    proc = subprocess.Popen(
        [gunicorn_bin, "-c", "gunicorn.conf.py", "wsgi:app"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def serving() -> bool:
            assert proc.poll() is None, (tmp_path / "gunicorn.log").read_text()
            return len(children(proc.pid)) >= 2 and ready(port)

        wait_until(serving, timeout=60, interval=0.1, message="gunicorn did not come up")
        yield proc, port
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()


def ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            status, _ = read_response(sock)
            return status == 200
    except (OSError, NoResponse):
        return False
