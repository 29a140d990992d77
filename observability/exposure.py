"""Where the API answers `/metrics`: on its own port, never on the public one in production.

`/metrics` tells whoever reads it the routes, their traffic and error rates, the outbox and queue
backlogs and the build: reconnaissance for an attacker, so it must not be reachable where the API
is. With `METRICS_PORT` set, gunicorn.conf.py binds a second listener on that port (interface
`METRICS_ADDR`, default all) next to the API's, the same port the job worker serves its metrics on;
the Ingress and the published ports only ever reach the API's. A connection is known to have come
in on the metrics listener by the local port of its own socket (`gunicorn.socket`), which no header
can forge. Then:

- on the metrics listener, only `/metrics` is answered (anything else is a plain 404);
- on the API's listener, `/metrics` is a 404, except outside production when `METRICS_PORT` is
  unset: `make run`, `flask run` and the test client keep it on the one port they have.

The gunicorn workers still answer the scrape (multiprocess aggregation and the scrape-time state
are unchanged); only the port differs.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from flask import Flask, request

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment  # types only

METRICS_PATH = "/metrics"
ON_METRICS_LISTENER = "gatehouse.metrics_listener"
_NOT_FOUND = b'{"title":"Not Found","status":404}'


def arrived_on(environ: dict[str, Any], port: int) -> bool:
    """The request's connection was accepted on local `port` (gunicorn sockets only)."""
    conn = environ.get("gunicorn.socket")
    if not isinstance(conn, socket.socket):
        return False
    try:
        local = conn.getsockname()
    except OSError:
        return False
    return isinstance(local, tuple) and local[1] == port


class MetricsListener:
    """WSGI middleware (only when METRICS_PORT is set): marks requests that came in on the
    metrics listener and answers everything there but `/metrics` with a 404, so the internal
    port is not a second way into the API."""

    def __init__(self, app: WSGIApplication, port: int) -> None:
        self.app = app
        self.port = port

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if not arrived_on(environ, self.port):
            return self.app(environ, start_response)
        if environ.get("PATH_INFO") != METRICS_PATH:
            start_response(
                "404 NOT FOUND",
                [
                    ("Content-Type", "application/problem+json"),
                    ("Content-Length", str(len(_NOT_FOUND))),
                ],
            )
            return [_NOT_FOUND]
        environ[ON_METRICS_LISTENER] = True
        return self.app(environ, start_response)


def served_here(metrics_port: int | None, *, production: bool) -> bool:
    """Whether the request in context may read `/metrics` (see the module docstring)."""
    if request.environ.get(ON_METRICS_LISTENER):
        return True
    return metrics_port is None and not production


def init_app(app: Flask, metrics_port: int | None) -> None:
    if metrics_port is not None:
        # Flask's documented way to wrap the WSGI app; mypy sees the assignment of a method.
        app.wsgi_app = MetricsListener(app.wsgi_app, metrics_port)  # type: ignore[method-assign]
