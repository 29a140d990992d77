"""The one free port and the one wait-until of the test suite."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    condition: Callable[[], T],
    timeout: float = 30.0,
    *,
    interval: float = 0.05,
    message: str | Callable[[], str] = "condition not met",
) -> T:
    """Poll `condition` until it returns something truthy and return that; fails the test with
    `message` (or what it returns, read only then: logs, say) once `timeout` seconds passed. The
    bound is an upper one: a healthy run returns as soon as the condition holds. A condition that
    can tell the awaited event will never come (a process exited) fails at once itself."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            pytest.fail(f"{text} (not within {timeout}s)", pytrace=False)
        time.sleep(interval)
