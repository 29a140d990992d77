"""The HTTP benchmark (`make bench`, `python -m bench.http`) end to end, as briefly as its options
allow: real wrk against real gunicorn servers on the suite's PostgreSQL and Redis, the raw Argon2
rate, and the report read back.

Only the shape of the report is checked (production's settings in its header, every scenario
measured — with rate limits on too — no request failed, the targets of docs/benchmarks.md judged
and the as-deployed figures beside them), never PASS or MISS: speed depends on the machine and on
the tests running beside this one. A missing wrk fails the test (`make ops-deps` installs it).
"""

from __future__ import annotations

import http.server
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest
import redis

from bench.http.wrk import ensure_wrk, run_wrk
from tests.support.database import BASE_DATABASE_URL, DB_NAME_PREFIX, drop_database
from tests.support.throwaway import with_redis_db

ROOT = Path(__file__).resolve().parents[2]
# The suite's Redis databases are 1, 2, ... by default (one per xdist worker), the load smoke
# test's 13 and `make bench`'s own 15: this one is the benchmark's alone, even beside `make bench`.
BENCH_REDIS_DB = 14
# Generous: alone the run takes about 15 s, but `make test` runs other tests beside it.
TIMEOUT_S = 300
SHORTEST = [
    "--duration", "1s", "--warmup", "1s",  # the parser's minimum: a duration is at least 1s
    "--hash-seconds", "1", "--hash-processes", "1",
    "--repeat", "1", "--rebalance", "0",
    "--connections", "2", "--login-clients", "1",
    "--workers", "1", "--threads", "2",
    "--skip-install",
]  # fmt: skip
SCENARIOS = (
    "GET /bare (bare Flask)",
    "GET /bare, production observability (access log, metrics, tracing)",
    "POST /bare/login (select, verify, insert, commit, sign)",
    "GET /api/v1/users/me",
    "GET /api/v1/users/me, Origin",
    "GET /api/v1/users/me, Origin, rate limits on",
    "POST /api/v1/auth/login",
)
# Each measure of "## Targets", in order: the start of its text -> its target ("—": a figure shown
# beside a target, e.g. the same measure as deployed, with rate limits on).
TARGETS = [
    ("users/me ÷ bare (req/s), Origin, rate limits off", "≥ 60%"),
    ("the same, rate limits on (as deployed)", "—"),
    ("users/me p99 at 2 connections, Origin, rate limits off", "≤ 20 ms"),
    ("the same, rate limits on (as deployed)", "—"),
    ("the floor: bare with production observability ÷ bare (req/s)", "—"),
    ("the floor: bare Flask's p99 at 2 connections", "—"),
    ("login work beyond the hash: server CPU per login - per raw hash", "≤ 2 ms"),
    ("the floor: bare login (select, verify, insert, commit, sign) beyond the hash", "—"),
    ("login ÷ raw hash rate", "—"),
    ("login p95 at 1 clients", "< 100 ms"),
]
# What the report's header must say the Gatehouse servers ran with: production's settings.
PRODUCTION = (
    "LOG_LEVEL=INFO",
    "ACCESS_LOG_SAMPLE=0.1,",
    "CORS_ORIGINS=https://app.example.com",
    "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:",
    "OTEL_TRACES_SAMPLER=parentbased_traceidratio",
    "OTEL_TRACES_SAMPLER_ARG=0.1",
)


def run_bench(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m bench.http` with the shortest settings; on a timeout the runner is sent
    SIGTERM first, so that it stops its servers and drops its database as after a Ctrl-C."""
    command = [sys.executable, "-m", "bench.http", *SHORTEST]
    with subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                stdout, stderr = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                stdout, stderr = proc.communicate()
            pytest.fail(f"the benchmark took over {TIMEOUT_S}s:\n{stdout}\n{stderr}")
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def table_after(text: str, heading: str) -> list[dict[str, str]]:
    """The rows of the first Markdown table after `heading`, as {column: cell}."""
    lines = text.split(heading, 1)[1].splitlines()
    rows: list[list[str]] = []
    for line in lines:
        if not line.startswith("|"):
            if rows:
                break
            continue
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    header, _rule, *body = rows
    return [dict(zip(header, row, strict=True)) for row in body]


def requests_per_second(cell: str) -> float:
    return float(cell.replace(",", ""))


def leading_number(cell: str) -> float:
    return float(cell.split()[0].replace(",", ""))


def database_exists(name: str) -> bool:
    with psycopg.connect(BASE_DATABASE_URL, autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return found is not None


def bench_env(redis_url: str, name: str) -> tuple[dict[str, str], str, str]:
    """The environment of a runner on a database of this xdist worker's own and the benchmark's
    Redis database: (environment, database name, Redis URL)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or "0"
    db_name = f"{DB_NAME_PREFIX}_{name}_{worker}"
    bench_redis_url = with_redis_db(redis_url, BENCH_REDIS_DB)
    env = {
        **os.environ,
        "BENCH_DATABASE_URL": BASE_DATABASE_URL,
        "BENCH_DB_NAME": db_name,
        "BENCH_REDIS_URL": bench_redis_url,
    }
    return env, db_name, bench_redis_url


def test_bench_measures_every_scenario_and_reports_the_targets(redis_url: str) -> None:
    env, db_name, bench_redis_url = bench_env(redis_url, "bench")
    try:
        done = run_bench(env)
        database_left = database_exists(db_name)
        redis_keys_left = redis.Redis.from_url(bench_redis_url).dbsize()
    finally:  # only ever needed when the runner did not clean up
        drop_database(db_name)
        redis.Redis.from_url(bench_redis_url).flushdb()
    text = f"{done.stdout}\n{done.stderr}"
    assert done.returncode == 0, text

    for setting in PRODUCTION:
        assert setting in done.stdout, f"{setting} not in the header\n{text}"
    assert "LOG_LEVEL=WARNING" not in done.stdout

    results = {row["scenario"]: row for row in table_after(done.stdout, "## Results")}
    for scenario in SCENARIOS:
        assert scenario in results, text
        assert requests_per_second(results[scenario]["req/s"]) > 0, f"{scenario}: no request"
        assert results[scenario]["errors"] == "0", f"{scenario}: errors\n{text}"
        assert leading_number(results[scenario]["server CPU µs/req"]) > 0, scenario
    raw = [row for scenario, row in results.items() if re.fullmatch(r"Argon2 .+ \(raw\)", scenario)]
    assert len(raw) == 1, text
    assert requests_per_second(raw[0]["req/s"]) > 0, "no Argon2 hash"
    assert raw[0]["server CPU µs/req"].endswith("(per hash)"), raw[0]
    assert leading_number(raw[0]["server CPU µs/req"]) > 0, "no CPU per hash"

    targets = table_after(done.stdout, "## Targets")
    assert len(targets) == len(TARGETS), text
    for row, (measure, target) in zip(targets, TARGETS, strict=True):
        assert row["measure"].startswith(measure), text
        assert re.fullmatch(r"-?\d+\.\d%|-?\d+\.\d\d ms", row["value"]), row
        assert row["target"] == target, row
        if target == "—":
            assert row[""] == "", row
        else:
            assert row[""] in ("PASS", "MISS") or row[""].startswith("n/a"), row

    # Nothing left behind: the runner dropped its database and emptied its Redis db itself.
    assert not database_left, f"{db_name} was not dropped"
    assert redis_keys_left == 0, f"{bench_redis_url} was not emptied"


def test_wrk_sends_the_headers_it_is_given() -> None:
    """The Origin of the `, Origin` scenarios reaches the server on every request wrk makes."""
    seen: list[str | None] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as wrk's connections are

        def do_GET(self) -> None:
            seen.append(self.headers.get("Origin"))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:  # quiet: the test reads `seen`
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        report = run_wrk(
            ensure_wrk(skip_install=True),
            f"http://127.0.0.1:{server.server_address[1]}/api/v1/users/me",
            connections=1,
            seconds=1,
            threads=1,
            headers={"Origin": "https://app.example.com"},
        )
    finally:
        server.shutdown()
        server.server_close()
    assert report["requests"] > 0
    assert set(seen) == {"https://app.example.com"}


def test_the_in_process_breakdown_measures_every_variant(redis_url: str) -> None:
    """`python -m bench.http.inprocess`: one row per variant, each a number of microseconds."""
    from bench.http.inprocess import HEADING, VARIANTS

    env, db_name, bench_redis_url = bench_env(redis_url, "bench_inprocess")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.http.inprocess", "--rounds", "2", "--requests", "3"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
        database_left = database_exists(db_name)
    finally:
        drop_database(db_name)
        redis.Redis.from_url(bench_redis_url).flushdb()
    text = f"{done.stdout}\n{done.stderr}"
    assert done.returncode == 0, text
    rows = table_after(done.stdout, HEADING)
    assert [row["variant"] for row in rows] == list(VARIANTS), text
    for row in rows:
        assert leading_number(row["µs CPU per request, best round"]) > 0, row
    assert not database_left, "the runner left its database behind"
