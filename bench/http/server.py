"""The server under test: `gunicorn -c gunicorn.conf.py APP` (the production command) on a free
port in its own process group, with what the measurements read from it — its CPU time and how
wrk's connections are spread over its workers — and a small HTTP client for the calls that
check it answers before it is measured.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.http.cpu import process_cpu_ticks
from bench.http.priority import child_setup
from tests.support.throwaway import SetupError, start_gunicorn, tail
from tests.support.waiting import free_port


def startup_failure(log: Path) -> str:
    """What a server said before it failed: its plain lines (the app's own message), once each,
    else the last few lines of gunicorn's."""
    lines = tail(log, 40).splitlines()
    plain = [line for line in lines if line.strip() and not line.startswith("{")]
    return "\n".join(dict.fromkeys(plain[-5:])) if plain else "\n".join(lines[-3:])


class Server:
    """`gunicorn -c gunicorn.conf.py APP` on a free port, in its own process group."""

    def __init__(
        self,
        name: str,
        app: str,
        env: dict[str, str],
        workers: int,
        threads: int,
        ready_path: str,
        logdir: Path,
    ) -> None:
        self.name = name
        self.app = app
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ready_path = ready_path
        self.log_path = logdir / f"{name}-{workers}x{threads}.log"
        self.env = {
            **env,
            "BIND": f"127.0.0.1:{self.port}",
            "WEB_CONCURRENCY": str(workers),
            "GUNICORN_THREADS": str(threads),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        self.proc = start_gunicorn(self.app, self.env, self.log_path, child_setup)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            startup_log = self.log_path.read_text(errors="replace")
            # A worker that fails to import the app with an exit code other than gunicorn's
            # boot/load errors (3, 4) is respawned forever instead of stopping the master.
            if self.proc.poll() is not None or startup_log.count("exited with code") >= 3:
                raise SetupError(
                    f"gunicorn ({self.app}) "
                    + (
                        f"exited with {self.proc.returncode}"
                        if self.proc.poll() is not None
                        else "keeps losing its workers at start"
                    )
                    + ":\n"
                    + startup_failure(self.log_path)
                )
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, _, _ = http_request(self.base, "GET", self.ready_path, timeout=1.0)
                if status == 200:
                    return
            time.sleep(0.2)
        raise SetupError(
            f"gunicorn ({self.app}) not ready at {self.base}{self.ready_path} "
            f"after {timeout:.0f}s:\n{tail(self.log_path)}"
        )

    def connections_per_worker(self) -> list[int]:
        """Established client connections held by each worker, most first (Linux /proc).

        gthread workers accept from one shared socket and keep a keep-alive connection for its
        whole life, so the split of wrk's connections, made once at connect time, decides how
        many cores the run can use: 31/1 on two workers is one busy core.
        """
        if self.proc is None:
            return []
        inodes: set[str] = set()
        hex_port = f"{self.port:04X}"
        with contextlib.suppress(OSError), open("/proc/net/tcp") as table:
            for row in table.readlines()[1:]:
                cols = row.split()
                if cols[1].endswith(":" + hex_port) and cols[3] == "01":  # ESTABLISHED
                    inodes.add(cols[9])
        counts = []
        for pid in self._worker_pids():
            held = 0
            with contextlib.suppress(OSError):
                for fd in os.scandir(f"/proc/{pid}/fd"):
                    with contextlib.suppress(OSError):
                        link = os.readlink(fd.path)
                        if link.startswith("socket:[") and link[8:-1] in inodes:
                            held += 1
            counts.append(held)
        return sorted(counts, reverse=True)

    def _worker_pids(self) -> list[int]:
        assert self.proc is not None
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in children.split()]

    def cpu_seconds(self) -> float | None:
        """User + system CPU of the master and workers so far (Linux /proc)."""
        if self.proc is None:
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        try:
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                with contextlib.suppress(OSError):
                    stat = Path(entry.path, "stat").read_text()
                    # the process group (field 5 of stat(5)) is the master's pid
                    if int(stat[stat.rindex(")") + 2 :].split()[2]) == self.proc.pid:
                        total += process_cpu_ticks(stat)
        except OSError:
            return None
        return total / ticks

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=15)
        # Whatever is left of the group (a worker stuck in shutdown) goes the hard way.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self.proc = None


@contextlib.contextmanager
def serving(server: Server) -> Iterator[Server]:
    try:
        server.start()
        yield server
    finally:
        server.stop()


def http_request(
    base: str,
    method: str,
    path: str,
    *,
    body: Any = None,
    token: str | None = None,
    extra_headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], Any]:
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        headers = {"Accept": "application/json", **(extra_headers or {})}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = raw.decode(errors="replace")
        return response.status, dict(response.getheaders()), data
    finally:
        conn.close()
