"""`gatehouse_db_pool_checkout_seconds` (observability.metrics.track_pool) against a real
PostgreSQL pool of one connection: a checkout that waits for the connection to come back is
measured at its wait, one that gives up at `pool_timeout` is measured too. The gunicorn thread
gauges are measured in tests/e2e/test_observability_stack.py, under gunicorn."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, create_engine, exc, text

from observability.metrics import track_pool
from webapp.config import sqlalchemy_url

NAME = "gatehouse_db_pool_checkout_seconds"


def observed() -> tuple[float, float, float]:
    """(count, sum, count of the 0.25 s bucket) of the histogram in this process."""
    count = REGISTRY.get_sample_value(f"{NAME}_count") or 0.0
    total = REGISTRY.get_sample_value(f"{NAME}_sum") or 0.0
    fast = REGISTRY.get_sample_value(f"{NAME}_bucket", {"le": "0.25"}) or 0.0
    return count, total, fast


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    made = create_engine(
        sqlalchemy_url(database_url), pool_size=1, max_overflow=0, pool_timeout=0.5
    )
    track_pool(made)
    yield made
    made.dispose()


def test_a_checkout_that_waits_for_the_only_connection_is_measured_at_its_wait(
    engine: Engine,
) -> None:
    with engine.connect() as first:  # opens the pool's one connection
        first.execute(text("select 1"))
    count, _, fast = observed()
    with engine.connect() as warm:  # a free pooled connection: no wait
        warm.execute(text("select 1"))
    after = observed()
    assert after[0] == count + 1
    assert after[2] == fast + 1, "a free connection is handed out well under 0.25 s"

    held = engine.connect()
    after = observed()
    releaser = threading.Timer(0.3, held.close)
    started = time.perf_counter()
    releaser.start()
    with engine.connect() as waiting:  # blocks until the timer returns the one connection
        waited = time.perf_counter() - started
        waiting.execute(text("select 1"))
    releaser.join()
    count2, total2, fast2 = observed()
    assert count2 == after[0] + 1
    assert fast2 == after[2], "the wait landed above the 0.25 s bucket"
    assert 0.3 <= total2 - after[1] <= waited + 0.05


def test_a_checkout_that_times_out_is_measured_too(engine: Engine) -> None:
    with engine.connect():
        count, total, _ = observed()
        with pytest.raises(exc.TimeoutError):
            engine.connect()
    after_count, after_total, _ = observed()
    assert after_count == count + 1
    assert after_total - total >= 0.5  # pool_timeout
