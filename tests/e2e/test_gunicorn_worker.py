"""The API's gunicorn worker (webapp.gunicorn_worker.FairThreadWorker) holds at most
`HELD_PER_THREAD` connections per thread while its threads are busy, so a burst of keep-alive
clients is spread over the workers instead of landing on whichever woke first."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess

from tests.support.gunicorn import children, read_response
from tests.support.waiting import wait_until
from webapp.gunicorn_worker import HELD_PER_THREAD

THREADS = 4  # GUNICORN_THREADS of the `gunicorn` fixture (2 workers)
HELD = THREADS * HELD_PER_THREAD  # what a worker with every thread busy still accepts
CLIENTS = 2 * HELD + 8


def held_per_worker(master: int, port: int) -> list[int]:
    """Established connections to `port` held by each worker (Linux /proc)."""
    inodes = set()
    with open("/proc/net/tcp") as table:
        for row in table.readlines()[1:]:
            cols = row.split()
            if cols[1].endswith(f":{port:04X}") and cols[3] == "01":
                inodes.add(cols[9])
    counts = []
    for pid in children(master):
        held = 0
        for fd in os.scandir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(fd.path)
                held += link.startswith("socket:[") and link[8:-1] in inodes
        counts.append(held)
    return sorted(counts)


def test_a_burst_of_connections_is_spread_over_the_workers(
    gunicorn: tuple[subprocess.Popen[bytes], int],
) -> None:
    proc, port = gunicorn
    clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(CLIENTS)]
    try:
        # No request sent yet: each accepted connection keeps a thread waiting for its first
        # bytes or waits for one, so each worker takes HELD and leaves the rest in the backlog.
        wait_until(
            lambda: held_per_worker(proc.pid, port) == [HELD, HELD],
            timeout=10,
            message="connections not spread over the workers",
        )

        for sock in clients:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        statuses = [read_response(sock)[0] for sock in clients]
    finally:
        for sock in clients:
            sock.close()

    assert statuses == [200] * CLIENTS  # the queued ones are served as threads free up
