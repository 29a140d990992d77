"""Graceful shutdown under load: gunicorn (`-c gunicorn.conf.py wsgi:app`, 2 workers) keeps
answering while it is stopped with SIGTERM — the master (a pod being terminated) or one worker
(a recycled worker) — and no request that the service accepted fails.

Client threads request continuously, some over keep-alive connections, some with a new connection
per request, through a minimal HTTP/1.1 client on raw sockets so that every outcome is known
exactly: a complete response; a connection refused; or a connection reset / closed before or after
response bytes arrived.

What counts as "not accepted" (expected once the master has begun to stop, as when Kubernetes has
taken the pod out of its endpoints): a refused connection, and a connection opened *after* SIGTERM
was sent that the server closes without a byte of response (it sat in the listen backlog of a
server that no longer accepts). Everything else that is not a complete 200 is a failure: a reset on
a connection opened before SIGTERM, a kept-alive connection dropped under a request, a truncated or
5xx response.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from tests.support.gunicorn import NoResponse, children, read_response
from tests.support.waiting import wait_until

PATHS = ("/health", "/ready", "/.well-known/jwks.json")
KEEPALIVE_CLIENTS = 4
FRESH_CLIENTS = 4


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    spanning_signal: int = 0  # complete responses to requests sent before SIGTERM, received after
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: str, detail: str = "") -> None:
        with self.lock:
            self.outcomes[outcome] += 1
            if outcome == "failed":
                self.failures.append(detail)


class Load:
    """Client threads requesting until stopped; `signalled_at` marks when SIGTERM was sent."""

    def __init__(self, port: int) -> None:
        self.address = ("127.0.0.1", port)
        self.stop = threading.Event()
        self.signalled_at: float | None = None
        self.tally = Tally()
        self.threads = [
            threading.Thread(target=self.client, args=(keepalive, n), daemon=True)
            for n, keepalive in enumerate([True] * KEEPALIVE_CLIENTS + [False] * FRESH_CLIENTS)
        ]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def client(self, keepalive: bool, number: int) -> None:
        sock: socket.socket | None = None
        opened_after_signal = False
        reused = False
        sent = 0
        while not self.stop.is_set():
            if sock is None:
                try:
                    sock = socket.create_connection(self.address, timeout=10)
                except ConnectionRefusedError:
                    self.tally.add("refused")
                    time.sleep(0.005)
                    continue
                except OSError as exc:
                    # A handshake reset by a listener that is closing is a refusal in disguise.
                    if self.signalled_at is not None:
                        self.tally.add("not accepted")
                    else:
                        self.tally.add("failed", f"connect: {exc}")
                    continue
                opened_after_signal = self.signalled_at is not None
                reused = False
            path = PATHS[(number + sent) % len(PATHS)]
            sent += 1
            connection = "keep-alive" if keepalive else "close"
            request = f"GET {path} HTTP/1.1\r\nHost: gatehouse\r\nConnection: {connection}\r\n\r\n"
            before_signal = self.signalled_at is None
            try:
                sock.sendall(request.encode())
                status, headers = read_response(sock)
            except (NoResponse, OSError) as exc:
                received = getattr(exc, "received", 0)
                if received == 0 and opened_after_signal:
                    self.tally.add("not accepted")
                else:
                    kind = "kept-alive" if reused else "new"
                    self.tally.add(
                        "failed", f"{path} on a {kind} connection, {received} bytes in: {exc}"
                    )
                sock.close()
                sock = None
                continue
            if status != 200:
                self.tally.add("failed", f"{path}: status {status}")
            else:
                self.tally.add("ok")
                if before_signal and self.signalled_at is not None:
                    with self.tally.lock:
                        self.tally.spanning_signal += 1
            if not keepalive or headers.get("connection", "").lower() == "close":
                sock.close()
                sock = None
            else:
                reused = True
        if sock is not None:
            sock.close()

    def send(self, pid: int, signum: int) -> None:
        self.signalled_at = time.monotonic()
        os.kill(pid, signum)

    def wait_for(self, count: int) -> None:
        """Until `count` more requests have completed (whatever their outcome)."""
        target = sum(self.tally.outcomes.values()) + count
        wait_until(
            lambda: sum(self.tally.outcomes.values()) >= target,
            timeout=60,
            interval=0.01,
            message=f"{count} more requests did not complete",
        )


def report(load: Load) -> str:
    return json.dumps(
        {"outcomes": dict(load.tally.outcomes), "failures": load.tally.failures[:20]}, indent=2
    )


def test_sigterm_to_the_master_fails_no_accepted_request(
    gunicorn: tuple[subprocess.Popen[bytes], int],
) -> None:
    proc, port = gunicorn
    with Load(port) as load:
        load.wait_for(300)  # under way on every client
        load.send(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 0  # drained and exited cleanly, within graceful_timeout
        load.wait_for(20)  # the clients see the closed listener
    tally = load.tally
    assert tally.failures == [], report(load)
    assert tally.outcomes["ok"] >= 300, report(load)
    assert tally.spanning_signal > 0, "no request was in flight at SIGTERM: " + report(load)
    assert tally.outcomes["refused"] > 0, report(load)  # the listener did close


def test_sigterm_to_one_worker_fails_no_request_at_all(
    gunicorn: tuple[subprocess.Popen[bytes], int],
) -> None:
    proc, port = gunicorn
    workers = children(proc.pid)
    victim = min(workers)
    with Load(port) as load:
        load.wait_for(300)
        load.send(victim, signal.SIGTERM)
        # the master replaces the worker; requests keep flowing meanwhile
        wait_until(
            lambda: victim not in children(proc.pid) and len(children(proc.pid)) >= 2,
            timeout=60,
            message="the worker was not replaced",
        )
        load.wait_for(300)
    tally = load.tally
    assert tally.failures == [], report(load)
    assert tally.outcomes["refused"] == 0, report(load)  # the other worker kept the listener
    assert tally.outcomes["not accepted"] == 0, report(load)
    assert tally.outcomes["ok"] >= 600, report(load)
    assert proc.poll() is None
    assert len(children(proc.pid) - workers) == 1  # one new worker
