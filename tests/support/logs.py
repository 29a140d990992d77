"""Log lines in-process: the root logger put back after a test (`root_logging`), and the JSON
lines the production handler writes (`json_lines`)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import observability.logging as log_setup


@pytest.fixture
def root_logging() -> Iterator[logging.Logger]:
    """Restores the root logger's handlers and level after a test rebinds them (make_app
    reconfigures logging onto the test's captured stdout)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def json_lines(root_logging: logging.Logger) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The JSON lines the production handler (same formatter and filters) writes, as dicts.

    At INFO, the level of LOG_LEVEL's default: the session app's in-process `upgrade()` runs
    Alembic's fileConfig, which leaves the root logger at WARN in the test process.
    """
    buffer = io.StringIO()
    handler = log_setup.json_handler(buffer)
    handler.set_name("test-json-lines")  # configure() replaces only the app's own handler
    root_logging.addHandler(handler)
    root_logging.setLevel(logging.INFO)

    def read() -> list[dict[str, Any]]:
        return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]

    yield read
    root_logging.removeHandler(handler)
