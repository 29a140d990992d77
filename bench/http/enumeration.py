"""`python -m bench.http.enumeration [--pairs 40]`: does a failed sign-in tell a known email from
an unknown one by its answer or its time?

Serves the API as production does (`gunicorn -c gunicorn.conf.py wsgi:app` on a throwaway target:
fresh database, flushed Redis db, production settings, `TRUSTED_PROXIES=1` so that each request
names its client IP in `X-Forwarded-For`), creates one account per scenario with the CLI, and sends
`--pairs` interleaved pairs — the known and an unknown email, the order alternating from pair to
pair, one request at a time over one keep-alive connection — for every step of a failed sign-in
(the 401 steps move to a fresh pair of emails every 40 pairs, before the known one would reach
`LOCKOUT_ACCOUNT_THRESHOLD` and be throttled):

1. `wrong password`: a wrong ASCII password (401 `invalid-credentials`);
2. `full-width password`: a wrong password that NFKC normalisation changes (401);
3. `locked`: the email from an IP that reached `LOCKOUT_THRESHOLD` failures (429 `account-locked`);
4. `throttled`: the email after `LOCKOUT_ACCOUNT_THRESHOLD` failures from other IPs (429
   `login-throttled`).

Prints, per scenario, the statuses, the median time of each side, their ratio and the median of
the per-pair differences. A benchmark, not a test: nothing about time is asserted. Exit status 0
when the measurements ran, 1 when the two sides of a pair answered differently (status, body
without `request_id`/`instance`, or header names), 2 when the setup failed, 130 on Ctrl-C.
`--nice N` runs gunicorn and the client at niceness N, as `python -m bench.http --nice` does.
Environment: `BENCH_DATABASE_URL`, `BENCH_REDIS_URL` (default db 14), `BENCH_DB_NAME` (default
`gatehouse_bench_enum`).
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import secrets
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bench.http.priority import PRIORITY, prioritize_self
from bench.http.server import Server, serving
from tests.support.throwaway import SetupError, ThrowawayTarget, step

WRONG = "wrong-Password-but-long-77"
# The same characters in their full-width forms (U+FF01..U+FF5E): NFKC turns them back.
FULL_WIDTH = "".join(chr(ord(c) + 0xFEE0) for c in WRONG)
LOCKOUT_THRESHOLD = 5
ACCOUNT_THRESHOLD = 50
BLOCK = 40  # failures per email in a 401 scenario, below ACCOUNT_THRESHOLD


class Client:
    """One keep-alive connection; each request is timed from send to the last body byte."""

    def __init__(self, base: str) -> None:
        host, _, port = base.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port)
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)

    def login(self, email: str, password: str, ip: str) -> tuple[float, int, Any, dict[str, str]]:
        body = json.dumps({"email": email, "password": password}).encode()
        headers = {"Content-Type": "application/json", "X-Forwarded-For": ip}
        for attempt in (1, 2):
            try:
                start = time.perf_counter()
                self.conn.request("POST", "/api/v1/auth/login", body=body, headers=headers)
                response = self.conn.getresponse()
                raw = response.read()
                elapsed = time.perf_counter() - start
                return elapsed, response.status, json.loads(raw), dict(response.getheaders())
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def client_ips() -> Iterator[str]:
    for n in itertools.count(1):
        yield f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


@dataclass
class Scenario:
    name: str
    known: list[float] = field(default_factory=list)
    unknown: list[float] = field(default_factory=list)
    statuses: set[tuple[int, int]] = field(default_factory=set)
    mismatches: int = 0

    def line(self) -> str:
        k, u = statistics.median(self.known) * 1000, statistics.median(self.unknown) * 1000
        pairs = list(zip(self.known, self.unknown, strict=True))
        diff = statistics.median((a - b) * 1000 for a, b in pairs)
        ratio = statistics.median(a / b for a, b in pairs)
        statuses = ", ".join(f"{a}/{b}" for a, b in sorted(self.statuses))
        return (
            f"{self.name:<20} {statuses:>9} {k:>10.2f} {u:>12.2f} {k / u:>7.3f} "
            f"{ratio:>10.3f} {diff:>+9.2f} {len(self.known):>6}"
        )


def _shape(status: int, body: Any, headers: dict[str, str]) -> tuple[Any, ...]:
    plain = {k: v for k, v in body.items() if k not in ("request_id", "instance")}
    return status, plain, sorted(h.lower() for h in headers)


def measure_pairs(
    client: Client,
    scenario: Scenario,
    known: str,
    unknown: str,
    password: str,
    pairs: int,
    ip_for_pair: Iterator[str],
) -> None:
    for n in range(pairs):
        ip = next(ip_for_pair)
        order = [(known, scenario.known), (unknown, scenario.unknown)]
        answers = {}
        for email, times in order if n % 2 == 0 else order[::-1]:
            elapsed, status, body, headers = client.login(email, password, ip)
            times.append(elapsed)
            answers[email] = (status, body, headers)
        scenario.statuses.add((answers[known][0], answers[unknown][0]))
        if _shape(*answers[known]) != _shape(*answers[unknown]):
            scenario.mismatches += 1


def run(args: argparse.Namespace) -> int:
    admin_url = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    db_name = os.environ.get("BENCH_DB_NAME", "gatehouse_bench_enum")
    target = ThrowawayTarget(admin_url, db_name, redis_url, prefix="enum")
    try:
        target.prepare({"TRUSTED_PROXIES": "1"})
        password = "Gh-" + secrets.token_urlsafe(18)
        blocks = -(-args.pairs // BLOCK)
        names = ["locked", "throttled", "warmup"]
        names += [f"{kind}{n}" for kind in ("wrong", "fullwidth") for n in range(blocks)]
        known = {name: f"known-{name}@example.com" for name in names}
        for email in known.values():
            target.create_admin(email, password)
        unknown = {name: f"unknown-{name}@example.com" for name in names}
        server = Server("enum", "wsgi:app", target.env, 1, 2, "/health", target.workdir)
        with serving(server):
            return _measure(Client(server.base), args.pairs, known, unknown)
    except SetupError as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        target.cleanup()


def _measure(client: Client, pairs: int, known: dict[str, str], unknown: dict[str, str]) -> int:
    ips = client_ips()
    step("warming up (10 unmeasured pairs)")
    measure_pairs(client, Scenario("warm-up"), known["warmup"], unknown["warmup"], WRONG, 10, ips)
    results = []
    for name, label, password in (
        ("wrong", "wrong password", WRONG),
        ("fullwidth", "full-width password", FULL_WIDTH),
    ):
        step(f"{label}: {pairs} pairs")
        scenario = Scenario(label)
        for block, start in enumerate(range(0, pairs, BLOCK)):
            count = min(BLOCK, pairs - start)
            emails = known[f"{name}{block}"], unknown[f"{name}{block}"]
            measure_pairs(client, scenario, *emails, password, count, ips)
        results.append(scenario)

    step(f"locked: {LOCKOUT_THRESHOLD} failures per email from one IP, then {pairs} pairs")
    locked_ip = next(ips)
    for email in (known["locked"], unknown["locked"]):
        for _ in range(LOCKOUT_THRESHOLD):
            client.login(email, WRONG, locked_ip)
    scenario = Scenario("locked")
    measure_pairs(
        client,
        scenario,
        known["locked"],
        unknown["locked"],
        WRONG,
        pairs,
        itertools.repeat(locked_ip),
    )
    results.append(scenario)

    step(f"throttled: {ACCOUNT_THRESHOLD} failures per email from as many IPs, then {pairs} pairs")
    for email in (known["throttled"], unknown["throttled"]):
        for _ in range(ACCOUNT_THRESHOLD):
            client.login(email, WRONG, next(ips))
    scenario = Scenario("throttled")
    measure_pairs(client, scenario, known["throttled"], unknown["throttled"], WRONG, pairs, ips)
    results.append(scenario)

    print()
    print(
        f"{'scenario':<20} {'statuses':>9} {'known ms':>10} {'unknown ms':>12} {'ratio':>7} "
        f"{'pair ratio':>10} {'diff ms':>9} {'pairs':>6}"
    )
    for scenario in results:
        print(scenario.line())
    print(
        "(known ms, unknown ms: medians; ratio: of those medians; pair ratio, diff: medians of "
        "known / unknown and known - unknown within each pair)"
    )
    different = [s.name for s in results if s.mismatches]
    if different:
        print(f"DIFFERENT ANSWERS for known and unknown emails in: {', '.join(different)}")
        return 1
    print("every pair got the same status, body (without request_id/instance) and header names")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http.enumeration", description=__doc__)
    parser.add_argument("--pairs", type=int, default=40, help="measured pairs per scenario (>= 30)")
    parser.add_argument(
        "--nice", type=int, default=0, help="niceness of gunicorn and this client (e.g. -5)"
    )
    args = parser.parse_args(argv)
    PRIORITY["nice"] = args.nice
    prioritize_self()
    if args.pairs < 30:
        parser.error("--pairs must be at least 30 (medians of fewer pairs are noise)")
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
