"""Who used the cores during a measurement: the server (or the hashing processes), wrk, the
benchmark database's PostgreSQL backends plus Redis, and everything else on the machine — read
from Linux /proc, so that a figure taken on a busy machine says so; also the wait for a quiet
machine (`--quiet-wait`) and the load average the report quotes.
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.throwaway import step


@dataclass
class CpuShare:
    """Cores busy during a measurement: the server (or hashing processes), wrk, the benchmark
    database's PostgreSQL backends plus Redis, and everything else on the machine.

    A large "other" means a busy machine and figures lower than the machine can give.
    """

    server: float | None
    wrk: float
    backing: float
    other: float

    def text(self) -> str:
        server = f"{self.server:.2f}" if self.server is not None else "?"
        return f"{server} / {self.wrk:.2f} / {self.backing:.2f} / {self.other:.2f}"


CPU_COLUMNS = "cores server/wrk/pg+redis/other"


def process_cpu_ticks(stat_text: str) -> int:
    """User + system CPU of a process, in clock ticks, from the text of its /proc/PID/stat."""
    fields = stat_text[stat_text.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, counted from "state" (stat(5))


def backing_cpu_seconds(db_name: str) -> float:
    """CPU so far of the PostgreSQL backends on `db_name` and of redis-server (Linux /proc)."""
    marker = f" {db_name} ".encode()
    total = 0
    try:
        entries = list(os.scandir("/proc"))
    except OSError:
        return 0.0
    for entry in entries:
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError):
            cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ")
            if (cmdline.startswith(b"postgres:") and marker in cmdline) or cmdline.startswith(
                b"redis-server"
            ):
                total += process_cpu_ticks(Path(entry.path, "stat").read_text())
    return total / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Machine-wide busy time (/proc/stat), this process's reaped children (wrk, hashers) and
    the database and Redis processes serving the benchmark."""

    db_name: str  # the benchmark database; main() sets it before anything is measured

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.machine = self._machine_busy()
        self.children = self._children()
        self.backing = backing_cpu_seconds(self.db_name)

    @staticmethod
    def _machine_busy() -> float:
        try:
            with open("/proc/stat") as stat:
                values = [int(v) for v in stat.readline().split()[1:]]
        except (OSError, ValueError):
            return 0.0
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _children() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def share(self, server_seconds: float | None, *, children_are_server: bool = False) -> CpuShare:
        elapsed = max(time.monotonic() - self.start, 1e-6)
        machine = (self._machine_busy() - self.machine) / elapsed
        children = (self._children() - self.children) / elapsed
        backing = max(0.0, (backing_cpu_seconds(self.db_name) - self.backing) / elapsed)
        server: float | None
        if children_are_server:
            server, wrk = children, 0.0
        else:
            server = server_seconds / elapsed if server_seconds is not None else None
            wrk = children
        other = max(0.0, machine - (server or 0.0) - wrk - backing)
        return CpuShare(server=server, wrk=wrk, backing=backing, other=other)


def wait_quiet(limit: float, threshold: float = 0.3) -> None:
    """Wait up to `limit` seconds for the machine to be idle (other work steals the 2 cores)."""
    if limit <= 0:
        return
    deadline, told = time.monotonic() + limit, False
    while True:
        meter = CpuMeter()
        time.sleep(2.0)
        busy = meter.share(None, children_are_server=True).other
        if busy < threshold:
            return
        if time.monotonic() >= deadline:
            step(f"the machine is still busy ({busy:.2f} cores) after {limit:g}s; measuring anyway")
            return
        if not told:
            step(f"waiting up to {limit:g}s for the machine to be quiet ({busy:.2f} cores busy)")
            told = True


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min) / {five:.2f} (5 min)"
