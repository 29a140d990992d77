"""How the benchmark notices that rate limiting refused a request of the run measured with limits
on (`bench.http.scenarios.refused_requests`): such a run measured refusals, not the limiter's
cost, and stops the benchmark."""

from __future__ import annotations

import json
from pathlib import Path

from bench.http.scenarios import refused_requests


def access_line(status: int, duration_ms: float = 1.5) -> str:
    return json.dumps(
        {
            "level": "INFO",
            "logger": "gatehouse.access",
            "message": "request",
            "path": "/api/v1/users/me",
            "status": status,
            "duration_ms": duration_ms,
        },
        separators=(",", ":"),
    )


def test_every_access_line_with_status_429_is_counted(tmp_path: Path) -> None:
    log = tmp_path / "gatehouse-limited-2x4.log"
    log.write_text(
        "\n".join(
            [
                '{"logger":"gunicorn.error","message":"Booting worker with pid: 429"}',
                access_line(200, duration_ms=429.0),  # 429 in another field
                access_line(429),
                "[2026-12-03 08:00:00] plain text mentioning 429",
                access_line(200),
                access_line(429),
                '{"truncated": 429',
            ]
        )
        + "\n"
    )

    assert refused_requests(log) == 2


def test_a_log_without_refusals_counts_none(tmp_path: Path) -> None:
    log = tmp_path / "gatehouse-limited-2x4.log"
    log.write_text("\n".join(access_line(200) for _ in range(5)) + "\n")

    assert refused_requests(log) == 0
