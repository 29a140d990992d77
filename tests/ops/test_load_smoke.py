"""The load-test runner end to end, briefly: a real gunicorn serving a fresh database, real k6,
the summary read back into the table, and the exit status following k6's thresholds.

Latency is not judged here (other tests share the machine): these runs use `--thresholds errors`
(no failed request or check, every endpoint exercised). CI's k6 stage and `make load` apply the
SLO latency thresholds.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from tests.load.runner import ENDPOINTS
from tests.support.database import BASE_DATABASE_URL, DB_NAME_PREFIX
from tests.support.ops import ROOT, output, run, tool


def load_runner(redis_url: str, summary_dir: Path, *extra: str) -> tuple[int, str]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or "0"
    command = [
        sys.executable,
        "-m",
        "tests.load",
        "smoke",
        "--start-server",
        "--duration",
        "3s",
        "--users",
        "3",
        "--thresholds",
        "errors",
        "--k6",
        tool("k6"),
        "--database-url",
        BASE_DATABASE_URL,
        "--db-name",
        f"{DB_NAME_PREFIX}_load_{worker}",
        "--redis-url",
        redis_url,
        "--summary-dir",
        str(summary_dir),
        *extra,
    ]
    done = run(command, cwd=ROOT, timeout=300)
    return done.returncode, output(done, limit=12000)


def table_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        words = line.split()
        if words and words[0] in ENDPOINTS:
            rows[words[0]] = words
    return rows


def test_smoke_run_exercises_every_flow_and_passes(redis_url: str, tmp_path: Path) -> None:
    code, text = load_runner(redis_url, tmp_path)
    assert code == 0, text
    rows = table_rows(text)
    assert set(rows) == set(ENDPOINTS), text
    for name, words in rows.items():
        assert words[1] == ENDPOINTS[name]
        assert int(words[2]) > 0, f"{name}: no request"
        p50, p95, p99 = (float(w) for w in words[4:7])
        assert 0 < p50 <= p95 <= p99, words
        assert words[-2] == "0", f"{name}: errors"
    assert re.search(r"^\[standard\]\s+standard\s+\d+", text, re.MULTILINE), text
    assert re.search(r"^\[hashing\]\s+hashing\s+\d+", text, re.MULTILINE), text
    assert re.search(r"thresholds: \d+ passed, 0 failed", text), text
    assert re.search(r"checks: [1-9]\d* passed, 0 failed", text), text
    summary = json.loads((tmp_path / "smoke-summary.json").read_text())
    assert summary["metrics"]["http_reqs"]["count"] > 0
    assert summary["setup_data"] == {"users": 3}


def test_a_crossed_threshold_fails_the_run_and_is_named(redis_url: str, tmp_path: Path) -> None:
    """With the password endpoints rate limited to 2 a minute, logins and registrations get 429s:
    the error-rate thresholds are crossed, k6 exits 99, and so does the runner."""
    code, text = load_runner(
        redis_url,
        tmp_path,
        "--server-env",
        "RATELIMIT_ENABLED=true",
        "--server-env",
        "RATELIMIT_AUTH=2 per minute",
    )
    assert code == 99, text
    assert "FAILED  http_req_failed: rate<0.001" in text, text
    assert "FAILED  http_req_failed{endpoint:register}: rate<0.001" in text, text
    assert int(table_rows(text)["register"][-2]) > 0


def test_runner_against_a_running_service_needs_the_admin_password() -> None:
    env = {k: v for k, v in os.environ.items() if k != "LOAD_ADMIN_PASSWORD"}
    command = [sys.executable, "-m", "tests.load", "smoke", "--base-url", "http://127.0.0.1:9"]
    done = run([*command, "--k6", tool("k6")], env=env)
    assert done.returncode == 2, output(done)
    assert "LOAD_ADMIN_PASSWORD" in done.stderr
