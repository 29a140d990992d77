"""Benchmark Gatehouse under gunicorn with wrk, beside a bare Flask endpoint served the same way.

What one run does (each step prints one line; `docs/benchmarks.md` explains the choices):

1. finds `wrk` (Debian package `wrk`; installed with apt-get when missing and running as root);
2. sets up a throwaway target: database `gatehouse_bench` (dropped and created), Redis db 15
   (flushed), a fresh JWT key file, a random `SECRET_KEY`, `GATEHOUSE_ENV=production`; runs the
   migrations and creates the benchmark user with the CLI;
3. serves `bench.http.bare_app:app`, then `wsgi:app` twice, each with `gunicorn -c
   gunicorn.conf.py` (the production command) and production's settings (`production.py`:
   `LOG_LEVEL=INFO` with the access log, CORS for a web client, tracing without a collector), and
   measures, after a warm-up: `GET /bare`; with rate limits off (capacity) `GET /api/v1/users/me`
   without and with `Origin` at `--connections` and `POST /api/v1/auth/login` at
   `--login-clients`; with rate limits on (as deployed, a budget no run exhausts: any 429 stops
   the benchmark) `GET /api/v1/users/me` with `Origin`;
4. measures the raw Argon2 hash rate and its CPU right before the login scenario: `hash_password`
   in one process per core for a few seconds;
5. prints the table, the targets (PASS/MISS; docs/benchmarks.md) with the as-deployed figures
   beside them, and cleans up servers, database, Redis db and key file — also after a failure or
   Ctrl-C.

Exit status: 0 whenever the measurements ran (a MISS is a finding, not a failure), 2 when the
setup failed or a request was refused by rate limiting (the line says why), 130 when interrupted.

This module reads the options and runs the steps in order; the work is done beside it:
`wrk.py` (step 1 and the load), `production.py` (the production settings), `scenarios.py` (steps
2 and 3: the target and what is measured), `server.py` (gunicorn), `hashing.py` (step 4), `cpu.py`
and `results.py` (what each measurement records), `report.py` (step 5's tables) and
`priority.py` (`--nice`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
from typing import Any

from bench.http.cpu import CpuMeter, load_average
from bench.http.priority import PRIORITY
from bench.http.production import RATE_LIMITS_ON, describe, production_settings
from bench.http.report import print_report, print_sweep
from bench.http.scenarios import Target, run_combo
from bench.http.wrk import ensure_wrk, wrk_version
from tests.support.throwaway import ROOT, SetupError

DEFAULT_ADMIN_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
DEFAULT_DB_NAME = "gatehouse_bench"


def parse_seconds(text: str) -> int:
    """`15s`, `2m`, `15` -> whole seconds (wrk's resolution), at least 1."""
    match = re.fullmatch(r"\s*(\d+)\s*(s|m|h)?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 15s or 1m)")
    value = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2) or "s"]
    if value < 1:
        raise argparse.ArgumentTypeError("a duration must be at least 1s")
    return value


def parse_combos(text: str) -> list[tuple[int, int]]:
    """`2x4,3x2` -> [(2, 4), (3, 2)] (workers x threads)."""
    combos = []
    for item in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", item)
        if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
            raise argparse.ArgumentTypeError(f"not WORKERSxTHREADS: {item!r}")
        combos.append((int(match.group(1)), int(match.group(2))))
    return combos


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.http",
        description="Requests/s and p50/p95/p99 of GET /api/v1/users/me and POST "
        "/api/v1/auth/login under gunicorn, beside a bare Flask endpoint served the same way.",
    )
    default_workers = int(os.environ.get("WEB_CONCURRENCY") or 2)
    default_threads = int(os.environ.get("GUNICORN_THREADS") or 4)
    parser.add_argument(
        "--duration",
        type=parse_seconds,
        default=15,
        metavar="15s",
        help="measured time per scenario (default 15s)",
    )
    parser.add_argument(
        "--warmup",
        type=parse_seconds,
        default=3,
        metavar="3s",
        help="unmeasured warm-up before each scenario (default 3s)",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=32,
        help="wrk connections for /bare and /users/me (default 32)",
    )
    parser.add_argument(
        "--login-clients",
        type=int,
        default=2,
        help="concurrent clients for POST /auth/login (default 2)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=default_workers,
        help="gunicorn workers (WEB_CONCURRENCY; default $WEB_CONCURRENCY or 2)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=default_threads,
        help="threads per worker (GUNICORN_THREADS; default $GUNICORN_THREADS or 4)",
    )
    parser.add_argument(
        "--wrk-threads",
        type=int,
        default=1,
        help="wrk threads (default 1: wrk shares the 2 cores with the server)",
    )
    parser.add_argument(
        "--hash-seconds",
        type=float,
        default=5.0,
        help="time for the raw Argon2 hash rate (default 5)",
    )
    parser.add_argument(
        "--hash-processes",
        type=int,
        default=os.cpu_count() or 2,
        help="processes hashing at once (default: the number of cores)",
    )
    parser.add_argument(
        "--sweep",
        type=parse_combos,
        metavar="2x4,3x2,...",
        help="also measure /bare and /users/me for these workers x threads",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each measurement wait up to this long for the machine to be "
        "idle (a shared machine; default 0: do not wait)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="measure each scenario N times and report the run with the most requests/s "
        "(a shared machine only ever slows a run down; default 1)",
    )
    parser.add_argument(
        "--rebalance",
        type=int,
        default=4,
        metavar="N",
        help="when every run of a scenario had one worker holding more than 3/4 of the "
        "connections, measure it up to N more times (default 4; 0: never)",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        metavar="N",
        help="run the servers, wrk and the hashing processes at this niceness (e.g. -10, as root): "
        "on a machine shared with other work it keeps their CPU from skewing the figures; "
        "PostgreSQL and Redis keep theirs (default 0)",
    )
    parser.add_argument(
        "--access-log-sample",
        type=float,
        metavar="SHARE",
        help="ACCESS_LOG_SAMPLE of the Gatehouse servers, 0 to 1 (default: the shipped default)",
    )
    parser.add_argument(
        "--access-log-slow-ms",
        type=float,
        metavar="MS",
        help="ACCESS_LOG_SLOW_MS of the Gatehouse servers (default: the shipped default)",
    )
    parser.add_argument(
        "--skip-install",
        action="store_true",
        help="never install wrk; stop with one line when it is missing",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    counts = (args.connections, args.login_clients, args.workers, args.threads, args.wrk_threads)
    if min(*counts, args.repeat) < 1 or args.rebalance < 0:
        print("benchmark setup failed: counts must be at least 1", file=sys.stderr)
        return 2
    sample, slow_ms = args.access_log_sample, args.access_log_slow_ms
    if (sample is not None and not 0 <= sample <= 1) or (slow_ms is not None and slow_ms < 0):
        print(
            "benchmark setup failed: --access-log-sample is a share from 0 to 1 and "
            "--access-log-slow-ms at least 0",
            file=sys.stderr,
        )
        return 2
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)

    def on_sigterm(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    # Also when started in the background by a shell, which ignores SIGINT for its children.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    if args.nice:
        try:  # checks the permission; each measured child applies it to itself
            os.setpriority(os.PRIO_PROCESS, 0, min(args.nice, os.getpriority(os.PRIO_PROCESS, 0)))
        except OSError as exc:
            print(f"benchmark setup failed: --nice {args.nice}: {exc.strerror}", file=sys.stderr)
            return 2
        PRIORITY["nice"] = args.nice

    production = production_settings(
        access_log_sample=args.access_log_sample, access_log_slow_ms=args.access_log_slow_ms
    )
    target = Target(
        os.environ.get("BENCH_DATABASE_URL", DEFAULT_ADMIN_DATABASE_URL),
        os.environ.get("BENCH_DB_NAME", DEFAULT_DB_NAME),
        os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL),
        production,
    )
    CpuMeter.db_name = target.db_name
    try:
        wrk = ensure_wrk(args.skip_install)
        context = [
            f"machine: {os.cpu_count()} cores, load average before the run {load_average()}",
            f"load generator: {wrk_version(wrk)}, {args.wrk_threads} thread(s), "
            f"{args.duration}s per scenario after a {args.warmup}s warm-up"
            + (f", best of {args.repeat} runs" if args.repeat > 1 else ""),
            "server: gunicorn -c gunicorn.conf.py (webapp.gunicorn_worker.FairThreadWorker), "
            f"{args.workers} workers x {args.threads} threads, GATEHOUSE_ENV=production, "
            "metrics on (PROMETHEUS_MULTIPROC_DIR)"
            + (f", niceness {args.nice}" if args.nice else ""),
            f"production settings (bench/http/production.py): {describe(production)}",
            "rate limits: off (capacity) but in the row marked `rate limits on`, which is as "
            "deployed: "
            + ", ".join(f"{name}={value}" for name, value in RATE_LIMITS_ON.items())
            + ", Redis storage (a budget no run exhausts: a 429 stops the benchmark)",
        ]
        with contextlib.suppress(Exception):
            head = subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            if head:
                context.append(f"code: {head} (plus uncommitted changes in the tree, if any)")
        target.prepare()
        main_run = run_combo(args, wrk, target, args.workers, args.threads, with_login=True)
        sweep = []
        for workers, threads in args.sweep or []:
            if (workers, threads) == (args.workers, args.threads):
                sweep.append(main_run)
            else:
                sweep.append(run_combo(args, wrk, target, workers, threads, with_login=False))
        context.append(f"load average after the run {load_average()}")
        print_report(main_run, main_run.hashes, context)
        if sweep:
            print_sweep(sweep)
        return 0
    except SetupError as exc:
        print(f"benchmark setup failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: servers stopped, benchmark database dropped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        target.cleanup()
