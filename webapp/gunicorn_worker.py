"""The gunicorn worker class of the API: gthread that spreads a burst of connections over the
workers.

Every gthread worker polls the one shared listening socket and accepts whatever it can, up to
`worker_connections` (1,000). When a burst of keep-alive clients connects at once (a load
balancer's pool, a load test), the worker that wakes first takes nearly all of them and keeps
them: on this machine one of two workers often held 29-31 of 32 connections, so one core did the
work of two and latency doubled. Here a worker accepts up to `HELD_PER_THREAD` connections per
thread whatever its load, and beyond that only while one of its threads is free, so a burst is
spread over the workers (32 clients on 2 workers of 4 threads: 16/16) and no client waits in the
listen backlog behind the kept-alive ones while the fleet is saturated; connections it already
holds are served as before (kept alive or pending, they do not count as busy). `SO_REUSEPORT`
would spread connections too, but a worker stopped with SIGTERM would then reset the connections
queued on its own socket.

Beyond `HELD_PER_THREAD` connections per thread, connections may wait in the listen backlog while
every thread is busy. When the worker stops (SIGTERM), it first accepts everything already queued
there and serves it within the graceful timeout, as the stock worker would have: a client that
connected before the signal gets its answer (tests/e2e/test_graceful_shutdown.py). While every
thread of every worker is blocked (on an unreachable database, say), probes and scrapes wait in the
backlog rather than in a worker's queue: the same wait, since the stock worker accepts them but has
no thread to serve them.

It leans on gthread's internals (`keepalived_conns`, `pending_conns`, `nr_conns`, `accept`,
`set_accept_enabled`) of the pinned gunicorn; tests/e2e/test_gunicorn_worker.py fails if a
new version changes them.

It reports its saturation: `gatehouse_gunicorn_threads` (its threads) and
`gatehouse_gunicorn_threads_busy` (those serving an API request now; a request on the metrics
listener, the scrape itself, is not counted, or every scrape would see one busy thread).

What gunicorn refuses itself, before the application sees a request (a request line past
`limit_request_line`, a header past `limit_request_field_size`, a malformed request line), it
answers with an HTML page of its own; this worker answers those in problem+json like every other
error of the API (`write_problem`), with a fixed detail that never echoes the refused request.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

PROBLEM_MIMETYPE = "application/problem+json"
# Up to this many connections per thread a worker accepts even with every thread busy, so that a
# burst of clients never waits in the listen backlog behind the kept-alive connections of a
# saturated fleet (it did: p99 of seconds, timeouts); beyond it, only a free thread accepts more.
HELD_PER_THREAD = 4
_DETAILS = {
    400: "The request line or a header is malformed.",
    403: "The request is forbidden.",
    414: "The request line exceeds the server's limit.",
    431: "A header field exceeds the server's limit.",
    500: "An unexpected error occurred.",
    501: "The transfer coding is not supported.",
}


def write_problem(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """`gunicorn.util.write_error`, in problem+json (`mesg`, which quotes the request, is left
    out: the status and slug say what was wrong)."""
    from webapp.http.problems import HTTP_SLUGS, PROBLEM_BASE  # not in the gunicorn master

    body = json.dumps(
        {
            "type": PROBLEM_BASE + HTTP_SLUGS.get(status_int, "http-error"),
            "title": reason,
            "status": status_int,
            "detail": _DETAILS.get(status_int, reason),
            "instance": "",
            "request_id": None,
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\n"
        "Connection: close\r\n"
        f"Content-Type: {PROBLEM_MIMETYPE}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        "Cache-Control: no-store\r\n"
        "\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


def _metrics_port() -> int | None:
    port = os.environ.get("METRICS_PORT", "").strip()
    return int(port) if port.isdigit() else None


class FairThreadWorker(ThreadWorker):
    def init_process(self) -> None:
        # `Worker.handle_error` writes through `util.write_error`, its only call site; this
        # process runs nothing but this worker, so the module attribute is replaced here.
        util.write_error = write_problem
        # Imported in the worker, not the master: the metrics' files are per process.
        from observability.metrics import GUNICORN_THREADS, GUNICORN_THREADS_BUSY

        self._busy = GUNICORN_THREADS_BUSY
        self._scrape_port = _metrics_port()
        GUNICORN_THREADS.inc(self.cfg.threads)
        super().init_process()

    def handle_request(self, req: Any, conn: Any) -> Any:
        server = conn.server
        if isinstance(server, tuple) and server[1] == self._scrape_port:
            return super().handle_request(req, conn)
        self._busy.inc()
        try:
            return super().handle_request(req, conn)
        finally:
            self._busy.dec()

    @property
    def worker_connections(self) -> int:
        idle = len(self.keepalived_conns) + len(self.pending_conns)
        floor = self.cfg.threads * HELD_PER_THREAD
        return int(min(self._max_connections, max(idle + self.cfg.threads, floor)))

    @worker_connections.setter
    def worker_connections(self, value: int) -> None:
        self._max_connections = value

    def set_accept_enabled(self, enabled: bool | None) -> None:
        if not enabled and not self.alive:
            self._accept_backlog()
        super().set_accept_enabled(enabled)

    def _accept_backlog(self) -> None:
        for listener in self.sockets:
            listener.setblocking(False)
            while self.nr_conns < self._max_connections:
                before = self.nr_conns
                self.accept(listener)  # one connection, or nothing left (EAGAIN is swallowed)
                if self.nr_conns == before:
                    break
