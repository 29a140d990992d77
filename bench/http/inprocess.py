"""`python -m bench.http.inprocess [--rounds 9] [--requests 500]`: where the CPU of a
`GET /api/v1/users/me` goes, one production setting switched off at a time.

Builds one app per variant on one throwaway database in this process (no gunicorn, no network:
the Flask test client), all with the production settings of `bench.http.production` and
`GATEHOUSE_ENV=production`, and measures the thread CPU of `/users/me` with `Origin` and a valid
token over interleaved rounds (the order reversed every other round), so that every variant sees
the same machine. Prints the best round's µs per request of each variant, its difference from
the app with everything on, and the median round. The access lines go to a file. Settings that
are global to a process (`LOG_LEVEL`: the root logger's level) cannot differ between the apps of
one process and are not among the variants. A benchmark: nothing is asserted.
Environment: `BENCH_DATABASE_URL`, `BENCH_REDIS_URL`, `BENCH_DB_NAME` (default
`gatehouse_bench_inprocess`), as `python -m bench.http`.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from typing import Any, TextIO

from bench.http.production import WEB_CLIENT_ORIGIN, production_settings
from bench.http.runner import DEFAULT_ADMIN_DATABASE_URL, DEFAULT_REDIS_URL
from bench.http.scenarios import BENCH_EMAIL, Target
from tests.support.throwaway import SetupError

HEADING = "## CPU per GET /api/v1/users/me in process, by production setting"
# Each variant: the settings changed from production's (field names of webapp.config.Settings).
VARIANTS: dict[str, dict[str, Any]] = {
    "production settings (all on)": {},
    "tracing off": {"otel_exporter_otlp_endpoint": None},
    "an access line for every request (ACCESS_LOG_SAMPLE=1)": {"access_log_sample": 1.0},
    "no access line for successful fast requests (ACCESS_LOG_SAMPLE=0)": {"access_log_sample": 0.0},
    "CORS off": {"cors_origins": ()},
}


def measure(rounds: int, requests: int, target: Target) -> dict[str, list[float]]:
    with open(target.workdir / "access.log", "w") as log:
        return _measure(rounds, requests, target, log)


def _measure(rounds: int, requests: int, target: Target, log: TextIO) -> dict[str, list[float]]:
    from webapp.config import Settings
    from webapp.factory import create_app

    clients = {}
    for name, changes in VARIANTS.items():
        clients[name] = create_app(Settings.from_env().with_overrides(**changes)).test_client()
        for handler in logging.getLogger().handlers:  # each app points the handler at stdout
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(log)
    first = next(iter(clients.values()))
    login = first.post(
        "/api/v1/auth/login", json={"email": BENCH_EMAIL, "password": target.password}
    )
    if login.status_code != 200:
        raise SetupError(f"POST /api/v1/auth/login answered {login.status_code}")
    headers = {"Authorization": f"Bearer {login.json['access_token']}", "Origin": WEB_CLIENT_ORIGIN}
    for client in clients.values():  # warm-up: caches filled, code paths taken
        for _ in range(300):
            if client.get("/api/v1/users/me", headers=headers).status_code != 200:
                raise SetupError("GET /api/v1/users/me did not answer 200")
    cpu: dict[str, list[float]] = {name: [] for name in clients}
    for round_number in range(rounds):
        order = list(clients.items())
        for name, client in order if round_number % 2 else reversed(order):
            started = time.thread_time()
            for _ in range(requests):
                client.get("/api/v1/users/me", headers=headers)
            cpu[name].append((time.thread_time() - started) / requests * 1e6)
    return cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--requests", type=int, default=500, help="requests per round")
    args = parser.parse_args(argv)
    target = Target(
        os.environ.get("BENCH_DATABASE_URL", DEFAULT_ADMIN_DATABASE_URL),
        os.environ.get("BENCH_DB_NAME", "gatehouse_bench_inprocess"),
        os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL),
        production_settings(),
    )
    try:
        target.prepare()
        os.environ.update(target.env)
        os.environ.update(target.production)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(dir=target.workdir)
        cpu = measure(args.rounds, args.requests, target)
    except SetupError as exc:
        print(f"benchmark setup failed: {exc}", file=sys.stderr)
        return 2
    finally:
        target.cleanup()
    # Other work on the machine only ever adds CPU time (caches, frequency): the best round is
    # the figure, the median shows the spread.
    base = min(cpu["production settings (all on)"])
    print(HEADING)
    print()
    print("| variant | µs CPU per request, best round | against all on | median round |")
    print("|---|---|---|---|")
    for name, values in cpu.items():
        best = min(values)
        print(f"| {name} | {best:,.0f} | {best - base:+,.0f} | {statistics.median(values):,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
