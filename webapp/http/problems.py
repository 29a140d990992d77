"""RFC 9457 problem+json: the one place that turns every error into a response.

Covers domain errors, Werkzeug HTTP errors (including flask-smorest/webargs validation aborts),
rate-limit breaches and unexpected exceptions (logged with the request id, never shown).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, current_app, json, request
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

from observability.metrics import UNEXPECTED_ERRORS
from webapp.errors import DomainError
from webapp.extensions import api
from webapp.http import request_id

log = logging.getLogger(__name__)

PROBLEM_MIMETYPE = "application/problem+json"
PROBLEM_BASE = "/problems/"

# Slugs for plain HTTP errors, so that every problem type is stable and documented.
HTTP_SLUGS = {
    400: "malformed-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    412: "precondition-failed",
    413: "payload-too-large",
    414: "uri-too-long",
    415: "unsupported-media-type",
    422: "validation-failed",
    428: "precondition-required",
    429: "rate-limited",
    431: "header-too-large",
    500: "internal-error",
    503: "service-unavailable",
}


def problem_response(
    status: int,
    slug: str,
    title: str,
    detail: str | None = None,
    *,
    errors: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail or title,
        "instance": request.path,
        "request_id": request_id.current(),
    }
    if errors:
        body["errors"] = errors
    if extra:
        body.update(extra)
    response = current_app.response_class(
        json.dumps(body), status=status, mimetype=PROBLEM_MIMETYPE
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def flatten_validation_messages(messages: Any) -> dict[str, list[str]]:
    """webargs nests messages by location ({"json": {"f": [...]}}); clients want f → list."""
    flat: dict[str, list[str]] = {}
    if not isinstance(messages, Mapping):
        return {"_schema": [str(messages)]}
    for location, fields in messages.items():
        if not isinstance(fields, Mapping):
            flat[str(location)] = [str(m) for m in _as_list(fields)]
            continue
        for name, value in fields.items():
            flat.update(_flatten_field(str(name), value))
    return flat


def _flatten_field(name: str, value: Any) -> dict[str, list[str]]:
    if isinstance(value, Mapping):
        nested: dict[str, list[str]] = {}
        for key, inner in value.items():
            nested.update(_flatten_field(f"{name}.{key}", inner))
        return nested
    return {name: [str(m) for m in _as_list(value)]}


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def handle_domain_error(exc: DomainError) -> Response:
    return problem_response(
        exc.status,
        exc.slug,
        exc.title,
        exc.detail,
        errors=exc.errors,
        headers=exc.headers,
        extra=exc.extra,
    )


def handle_http_exception(exc: HTTPException) -> Response:
    status = exc.code or 500
    slug = HTTP_SLUGS.get(status, "http-error")
    title = exc.name
    detail = exc.description
    errors = None
    data = getattr(exc, "data", None) or {}
    if status == 422 and "messages" in data:
        errors = flatten_validation_messages(data["messages"])
        detail = "The request body or parameters failed validation."
    if status == 400 and "messages" in data:
        detail = "The request body is not valid JSON."
    headers = dict(data.get("headers") or {})
    if exc.response is not None:
        headers.update({k: v for k, v in exc.response.headers.items() if k == "Allow"})
    if status == 405:
        allowed = exc.valid_methods if hasattr(exc, "valid_methods") else None
        if allowed:
            headers["Allow"] = ", ".join(allowed)
    if status == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="gatehouse"')
    return problem_response(status, slug, title, detail, errors=errors, headers=headers)


def handle_unexpected(exc: Exception) -> Response:
    if _database_unavailable(exc):
        log.error("database unavailable: %s", exc.__class__.__name__)
        response = problem_response(
            503,
            "service-unavailable",
            "Service unavailable",
            "The database is unavailable; retry shortly.",
            headers={"Retry-After": "5"},
        )
    else:
        log.exception("unhandled error", extra={"request_id": request_id.current()})
        response = problem_response(
            500, "internal-error", "Internal server error", "An unexpected error occurred."
        )
    # Flask's teardown (where prometheus-flask-exporter counts exceptions) sees none once a
    # handler answered: this is the count of the exceptions nothing expected.
    UNEXPECTED_ERRORS.labels(method=request.method, status=response.status_code).inc()
    return response


def _database_unavailable(exc: Exception) -> bool:
    """A lost or refused database connection is an outage (503, retry), not a bug (500)."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


# The OpenAPI description of every error body (flask-smorest would document its own `Error`).
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details; `type` ends in a slug listed in docs/problems.md.",
    "required": ["type", "title", "status", "detail", "instance", "request_id"],
    "properties": {
        "type": {"type": "string", "format": "uri-reference", "example": "/problems/not-found"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string", "format": "uri-reference"},
        "request_id": {"type": "string", "nullable": True},
        "errors": {
            "type": "object",
            "description": "Validation failures: field name → messages.",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
    },
    "additionalProperties": True,
}


def document_problems() -> None:
    """Make the OpenAPI document say what error responses really are: problem+json.

    flask-smorest lazily registers a response component per HTTP status (and `DEFAULT_ERROR`)
    whose body is its own `application/json` error schema; replace each error one, before any
    operation references it, with `application/problem+json` and the `Problem` schema.
    """
    components = api.spec.components
    if "Problem" not in components.schemas:
        components.schema("Problem", PROBLEM_SCHEMA)
    names = [s.name for s in HTTPStatus if s >= 400] + ["DEFAULT_ERROR"]
    for name in names:
        description = (
            "Default error response" if name == "DEFAULT_ERROR" else HTTPStatus[name].phrase
        )
        content = {PROBLEM_MIMETYPE: {"schema": "Problem"}}
        components.response(name, {"description": description, "content": content}, lazy=True)


def init_app(app: Flask) -> None:
    document_problems()
    app.register_error_handler(DomainError, handle_domain_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
