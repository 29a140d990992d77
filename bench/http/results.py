"""What one measurement produced: a wrk scenario (`Result`), the raw Argon2 hash rate and CPU
(`HashRate`), and the results of one gunicorn workers x threads combination (`Run`) that the
report prints, keyed by scenario.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bench.http.cpu import CpuShare

# The scenarios (the keys of `Run.results`) and their rows in the report. Rate limits are off
# (capacity) except where the name says otherwise.
BARE = "bare"
ME = "me"  # /users/me as an API client calls it: no Origin
ME_ORIGIN = "me_origin"  # as the web client calls it: Origin, CORS headers; the targets' row
ME_LIMITED = "me_limited"  # the same with rate limits on, as deployed
LOGIN = "login"
BARE_OBSERVED = "bare_observed"  # /bare with production's access log, metrics and tracing
BARE_LOGIN = "bare_login"  # the floor under login: only the work no login can skip
LABELS = {
    BARE: "GET /bare (bare Flask)",
    ME: "GET /api/v1/users/me",
    ME_ORIGIN: "GET /api/v1/users/me, Origin",
    ME_LIMITED: "GET /api/v1/users/me, Origin, rate limits on",
    LOGIN: "POST /api/v1/auth/login",
    BARE_OBSERVED: "GET /bare, production observability (access log, metrics, tracing)",
    BARE_LOGIN: "POST /bare/login (select, verify, insert, commit, sign)",
}


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

    def cpu_ms_beyond(self, hashes: HashRate) -> float | None:
        """Server CPU per request above one raw hash: for login, the work beyond the hash."""
        cpu = self.cpu_us_per_request
        return cpu / 1000 - hashes.cpu_ms_per_hash if cpu is not None else None

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
    cpu_ms_per_hash: float  # CPU time of one hash (user + system of the hashing loop)
    cpu: CpuShare | None = None


@dataclass
class Run:
    workers: int
    threads: int
    results: dict[str, Result] = field(default_factory=dict)
    hashes: HashRate | None = None
