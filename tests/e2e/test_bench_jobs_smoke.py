"""The email pipeline benchmark (`python -m bench.jobs`) end to end, as briefly as it
goes: real worker processes, the sink's ceiling and the bare-work floor, the table read back.

Only the table's shape is checked, never PASS or MISS: rates depend on the machine and on the
tests running beside this one (docs/jobs.md has the measured numbers).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support.database import DB_NAME_PREFIX

ROOT = Path(__file__).resolve().parents[2]


def test_the_jobs_benchmark_prints_both_kinds_beside_the_ceiling_and_the_floor():
    env = {**os.environ, "BENCH_JOBS_DB_NAME": f"{DB_NAME_PREFIX}_bench_jobs_smoke"}
    env.pop("BENCH_REDIS_URL", None)  # its own throwaway redis-server

    out = subprocess.run(
        [sys.executable, "-m", "bench.jobs", "--messages", "20", "--workers", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert out.returncode == 0, out.stderr[-3000:]
    table = out.stdout.split("emails/second (outbox -> queue -> worker -> SMTP sink)")[1]
    ceiling = re.search(r"counted: (\d+)", table)
    assert ceiling is not None
    assert int(ceiling.group(1)) > 0
    for kind in ("new_login (default queue, 1 job/email)", "welcome (low queue, batches of 50)"):
        [row] = [line for line in table.splitlines() if line.startswith(kind)]
        [(rate, share, goal, bare)] = re.findall(
            r"(\d+) \((\d+)%\)\s+>= (\d+): (?:PASS|MISS)\s+(\d+) \(\d+%\)", row
        )
        assert int(rate) > 0
        assert abs(int(share) - 100 * int(rate) / int(ceiling.group(1))) <= 1  # rounded twice
        assert int(goal) > 0
        assert int(bare) > 0
