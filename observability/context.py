"""Correlation ids: where a request keeps its id (set by `webapp.http.request_id` before Flask
sees the request), and the context outside a Flask request (jobs, CLI), set by the worker around
each job."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

REQUEST_ID_ENVIRON_KEY = "gatehouse.request_id"
STARTED_KEY = "gatehouse.started"  # when Flask began the request (timeit.default_timer)
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
user_id_var: ContextVar[str | None] = ContextVar("user_id", default=None)


@contextmanager
def bound(request_id: str | None = None, user_id: str | None = None) -> Iterator[None]:
    """Log lines inside the block carry these ids."""
    tokens = (request_id_var.set(request_id), user_id_var.set(user_id))
    try:
        yield
    finally:
        request_id_var.reset(tokens[0])
        user_id_var.reset(tokens[1])
