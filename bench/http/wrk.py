"""The load generator: finds (or installs) `wrk` and runs it once with `wrk_report.lua`, which
sends the method, body, bearer token and extra headers it is given and prints the requests,
latency percentiles and errors as one JSON line that `run_wrk` returns.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bench.http.priority import child_setup
from tests.support.throwaway import SetupError, step

LUA_SCRIPT = Path(__file__).resolve().parent / "wrk_report.lua"


def ensure_wrk(skip_install: bool) -> str:
    path = shutil.which("wrk")
    if path:
        return path
    missing = "wrk is not installed: install the Debian package `wrk` (apt-get install -y wrk)"
    if skip_install or os.geteuid() != 0:
        raise SetupError(missing)
    step("installing the Debian package wrk (apt-get install -y wrk)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "wrk"]
    done = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:  # a stale or empty package list: update once and try again
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        done = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    path = shutil.which("wrk")
    if done.returncode != 0 or path is None:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SetupError(f"{missing}; apt-get failed: {last[0]}")
    return path


def wrk_version(wrk: str) -> str:
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0] if first else "wrk"


def run_wrk(
    wrk: str,
    url: str,
    *,
    connections: int,
    seconds: int,
    threads: int,
    method: str = "GET",
    body: str | None = None,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    during: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """One wrk run; `headers` go on every request (e.g. a browser's `Origin`); `during` is called
    once the connections are open (about 1 s in)."""
    threads = max(1, min(threads, connections))
    command = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "-s",
        str(LUA_SCRIPT),
        url,
        "--",
        method,
        body or "-",
        token or "-",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=child_setup,
    ) as proc:
        try:
            if during is not None:
                time.sleep(min(1.0, seconds / 2))
                during()
            stdout, stderr = proc.communicate(timeout=seconds + 60)
        except BaseException:
            proc.kill()
            raise
    done = subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            report: dict[str, Any] = json.loads(line.removeprefix("BENCH_RESULT "))
            return report
    detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit {done.returncode}"]
    raise SetupError(f"wrk gave no result for {method} {url}: {detail[0]}")
