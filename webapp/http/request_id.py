"""X-Request-ID: keep a well-formed incoming id, otherwise mint one; echo it on every response.

A WSGI middleware rather than Flask hooks: the id exists before Flask sees the request and is
echoed on every response, errors raised outside the view included, at the price of one list
append.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from flask import Flask, has_request_context, request

from observability.context import REQUEST_ID_ENVIRON_KEY as ENVIRON_KEY

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment  # types only

HEADER = "X-Request-ID"
_VALID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


def current() -> str | None:
    """The id of the request in context (None outside a request)."""
    if not has_request_context():
        return None
    value: str | None = request.environ.get(ENVIRON_KEY)
    return value


class RequestIdMiddleware:
    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        incoming = environ.get("HTTP_X_REQUEST_ID", "")
        request_id = incoming if _VALID.match(incoming) else uuid.uuid4().hex
        environ[ENVIRON_KEY] = request_id

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers.append((HEADER, request_id))
            return start_response(status, headers, exc_info)

        return self.app(environ, start)


def init_app(app: Flask) -> None:
    # Flask's documented way to wrap the WSGI app; mypy sees the assignment of a method.
    app.wsgi_app = RequestIdMiddleware(app.wsgi_app)  # type: ignore[method-assign]
