"""When to try again: exponential backoff with jitter.

The n-th retry waits `JOBS_RETRY_BACKOFF * 2^(n-1)` seconds (10, 20, 40, 80, 160 s by default),
capped at an hour, then spread by ±20 % at random so that messages that failed together do not
come back together.
"""

from __future__ import annotations

import random

MAX_DELAY = 3600.0
JITTER = 0.2


def backoff(retry: int, base: float, *, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number `retry` (1 for the first retry)."""
    nominal = min(MAX_DELAY, base * 2.0 ** max(0, retry - 1))
    spread = (rng or random).uniform(1 - JITTER, 1 + JITTER)
    return nominal * spread
