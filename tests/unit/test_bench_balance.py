"""When the benchmark counts a run's connections as spread over the gunicorn workers
(`bench.http.results.Result.balanced`): a run that is not is measured again (`--rebalance`)."""

from __future__ import annotations

import pytest

from bench.http.results import Result


def result(connections: int, spread: list[int]) -> Result:
    return Result("GET /x", connections, 1000, 1.0, 1.0, 2.0, 3.0, {}, spread=spread)


@pytest.mark.parametrize(
    ("connections", "spread", "balanced"),
    [
        (32, [16, 16], True),
        (32, [24, 8], True),  # 3/4 exactly
        (32, [25, 7], False),
        (32, [32, 0], False),
        (2, [1, 1], True),
        (2, [2, 0], False),  # one core for both clients
        (3, [2, 1], True),
        (3, [3, 0], False),
        (1, [1, 0], True),  # nothing to spread
        (4, [4], True),  # one worker
        (32, [], True),  # not measured
    ],
)
def test_a_run_is_balanced_when_no_worker_holds_over_three_quarters(
    connections: int, spread: list[int], balanced: bool
) -> None:
    assert result(connections, spread).balanced is balanced
