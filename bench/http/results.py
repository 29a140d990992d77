"""What one measurement produced: a wrk scenario (`Result`), the raw Argon2 hash rate
(`HashRate`), and the results of one gunicorn workers x threads combination (`Run`) that the
report prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bench.http.cpu import CpuShare


@dataclass
class Result:
    scenario: str
    connections: int
    requests: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: dict[str, int]
    server_cpu_s: float | None = None
    cpu: CpuShare | None = None
    spread: list[int] = field(default_factory=list)  # connections per worker

    def spread_text(self) -> str:
        return "/".join(str(n) for n in self.spread) if self.spread else "n/a"

    @property
    def balanced(self) -> bool:
        """No worker held more than 3/4 of the connections (unknown, one worker or one
        connection count as balanced). With 32/0 one core serves everything, and the figure
        says more about gthread's accept race than about the endpoint; so with 2/0."""
        if len(self.spread) < 2 or self.connections < 2:
            return True
        return max(self.spread) <= math.floor(self.connections * 0.75)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def cpu_us_per_request(self) -> float | None:
        if self.server_cpu_s is None or not self.requests:
            return None
        return self.server_cpu_s / self.requests * 1e6

    def errors_text(self) -> str:
        if not self.error_count:
            return "0"
        parts = [f"{name} {count}" for name, count in self.errors.items() if count]
        return f"{self.error_count} ({', '.join(parts)})"


@dataclass
class HashRate:
    processes: int
    hashes: int
    rate: float  # hashes per second, all processes together
    ms_per_hash: float  # in one process
    cpu: CpuShare | None = None


@dataclass
class Run:
    workers: int
    threads: int
    results: dict[str, Result] = field(default_factory=dict)
    hashes: HashRate | None = None
