"""Log lines (one per event) on stdout, with request_id, user_id, trace_id and span_id: JSON in
production and tests, readable text in development (the caller chooses: `configure(level, fmt)`).

Secrets never reach the output: a filter redacts bearer tokens, JWTs, refresh tokens, API keys,
password hashes, emailed tokens in links, SQL parameter dumps, and the value of every field whose
name holds password, secret, token, hash or key (ids excepted; see SENSITIVE_WORDS) — in the
message, in exception text and in `extra` fields, nested dicts included — whatever logger they
come from. An access log line per request records method, route template, status and duration.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from random import random
from timeit import default_timer
from typing import Any

from flask import Flask, Response, g, has_request_context, request
from opentelemetry import trace
from pythonjsonlogger.orjson import OrjsonFormatter

from observability.context import (
    REQUEST_ID_ENVIRON_KEY,
    STARTED_KEY,
    request_id_var,
    user_id_var,
)

HANDLER_NAME = "gatehouse-json"
LOG_FORMATS = ("json", "text")
REDACTED = "[REDACTED]"
# A field name holding any of these words names a secret or a value derived from one (a password
# hash, an API key, a token digest): its value is redacted wherever the name appears — an `extra`
# field, a nested dict, a `name=value` or `'name': value` pair in a message or exception text.
SENSITIVE_WORDS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "hash",
    "key",
    "authorization",
    "cookie",
    "credential",
)
_SENSITIVE_WORD = "|".join(SENSITIVE_WORDS)
# Identifiers are kept (`api_key_id`, `key_id`, `token_ids`): they name a row, never a secret.
_SENSITIVE_KEYS = re.compile(rf"(?i)^(?!.*(?:^|_)ids?$).*(?:{_SENSITIVE_WORD})")
_SECRET_PATTERNS = [
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"),
    re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),  # JWTs
    re.compile(r"\b[0-9a-f]{32}\.[A-Za-z0-9_-]{40,}"),  # refresh tokens
    re.compile(r"\bgh_live_[0-9a-f]{16}_[a-z2-7]{52}\b"),  # API keys
    re.compile(r"\$argon2(?:id|i|d)\$[^\s'\",;)}\]]+"),  # Argon2 hashes (PHC strings)
    re.compile(r"\$2[abxy]?\$\d{2}\$[./A-Za-z0-9]{53}"),  # bcrypt hashes
    re.compile(r"\$(?:scrypt|pbkdf2[-_]sha\d+)\$[^\s'\",;)}\]]+"),
    # SQLAlchemy's parameter dump (every engine hides it; this covers one that would not).
    re.compile(r"(\[parameters: )[^\n]*"),
    re.compile(r"(?i)(token=)[A-Za-z0-9._~-]+"),
    # name=value, name: value, 'name': 'value', "name": "value" — for any sensitive name.
    re.compile(
        rf"(?i)([\"']?[\w-]*(?:{_SENSITIVE_WORD})[\w-]*[\"']?\s*[:=]\s*)"
        r"(\"[^\"]*\"|'[^']*'|b'[^']*'|[^\s,;&})\]]+)"
    ),
]
# Every pattern above needs one of these to match: text without any (most log lines, every
# access line) skips the substitutions. A test pairs each pattern with its trigger.
_MAYBE_SECRET = re.compile(
    rf"(?i)bearer|eyJ|[0-9a-f]{{32}}\.|gh_live_|\$|\[parameters: |{_SENSITIVE_WORD}"
)
# What logging itself puts on a record (plus our correlation ids): never user data, so the
# redaction pass skips them — it runs on every line, the access log included.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "request_id",
    "user_id",
    "trace_id",
    "span_id",
    "taskName",
}


@functools.lru_cache(maxsize=4096)
def sensitive_name(name: str) -> bool:
    """Whether a field called `name` holds a secret (see SENSITIVE_WORDS; ids excepted)."""
    return bool(_SENSITIVE_KEYS.search(name))


def redact(text: str) -> str:
    if not _MAYBE_SECRET.search(text):
        return text
    for pattern in _SECRET_PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
        else:
            text = pattern.sub(REDACTED, text)
    return text


def scrub(value: Any, depth: int = 0) -> Any:
    """A copy of an `extra` value with secrets redacted: sensitive keys of nested dicts, and
    secrets inside strings (the caller's own object is left untouched)."""
    if isinstance(value, str):
        return redact(value)
    if depth > 8:  # a log field this deep is a mistake; say so rather than walk it
        return REDACTED if isinstance(value, dict | list | tuple) else value
    if isinstance(value, dict):
        return {
            k: REDACTED if isinstance(k, str) and sensitive_name(k) else scrub(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub(v, depth + 1) for v in value]
    return value


class ContextFilter(logging.Filter):
    """Adds the correlation ids of the current request, job or span to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = user_id = None
        if has_request_context():
            request_id = request.environ.get(REQUEST_ID_ENVIRON_KEY)
            principal = g.get("principal")
            user_id = str(principal.user_id) if principal is not None else None
        request_id = request_id or request_id_var.get()
        user_id = user_id or user_id_var.get()
        record.request_id = request_id
        record.user_id = user_id
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            record.trace_id = format(span_context.trace_id, "032x")
            record.span_id = format(span_context.span_id, "016x")
        else:
            record.trace_id = record.span_id = None
        return True


class RedactingFilter(logging.Filter):
    """Rewrites the message and sensitive `extra` fields before any handler sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg, record.args = redact(message), None
        for key, value in list(record.__dict__.items()):
            if key in _STANDARD_ATTRIBUTES:
                continue
            if sensitive_name(key):
                setattr(record, key, REDACTED)
            elif isinstance(value, str | dict | list | tuple):
                setattr(record, key, scrub(value))
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class GatehouseJsonFormatter(OrjsonFormatter):
    def formatException(self, ei: Any) -> str:
        return redact(str(super().formatException(ei)))

    def formatStack(self, stack_info: str) -> str:
        return redact(str(super().formatStack(stack_info)))


class TextFormatter(logging.Formatter):
    """`time level logger [request_id] message key=value …` for a developer's terminal.

    The same filters run before it as before the JSON formatter, so the fields it prints are
    already redacted; tracebacks are redacted here, as in JSON.
    """

    default_msec_format = "%s.%03d"

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{self.formatTime(record)} {record.levelname:<7} {record.name}"
            f" [{getattr(record, 'request_id', None) or '-'}] {_one_line(record.getMessage())}"
        )
        extras = " ".join(
            f"{key}={_one_line(str(value))}"
            for key, value in record.__dict__.items()
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_")
        )
        user_id = getattr(record, "user_id", None)
        if user_id:
            extras = f"user_id={user_id} {extras}".rstrip()
        if extras:
            line = f"{line} {extras}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line

    def formatException(self, ei: Any) -> str:
        return redact(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return redact(super().formatStack(stack_info))


def _one_line(text: str) -> str:
    """User input cannot start a line of its own (a forged entry): line breaks are escaped."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def json_formatter() -> logging.Formatter:
    return GatehouseJsonFormatter(
        "%(levelname)s %(name)s %(message)s",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp=True,
    )


def formatter(fmt: str) -> logging.Formatter:
    """The formatter of a log format: `json` (production, tests) or `text` (development)."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {fmt!r}")
    return TextFormatter() if fmt == "text" else json_formatter()


def log_handler(stream: Any = None, fmt: str = "json") -> logging.Handler:
    """A stdout handler in `fmt` with the correlation ids and the redaction on every record."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(formatter(fmt))
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter())
    return handler


def json_handler(stream: Any = None) -> logging.Handler:
    return log_handler(stream, "json")


def configure(level: str = "INFO", fmt: str = "json") -> None:
    """Route every logger through one handler on stdout, JSON or text (idempotent)."""
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == HANDLER_NAME:
            root.removeHandler(existing)
    root.addHandler(log_handler(fmt=fmt))
    root.setLevel(level)
    for noisy in ("werkzeug", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


access_log = logging.getLogger("gatehouse.access")
# Probes and scrapes arrive every few seconds; a line each would drown the real traffic.
QUIET_PATHS = frozenset({"/health", "/ready", "/metrics"})


def init_access_log(app: Flask, *, sample: float = 1.0, slow_ms: float = 100.0) -> None:
    """One line per request, except successful fast ones beyond the `sample` share: a 4xx, a
    5xx or a request slower than `slow_ms` is always logged, because those are what on-call
    looks for; the rest are counted by the metrics anyway."""
    everything = sample >= 1.0
    slow_seconds = slow_ms / 1000

    @app.after_request
    def _log_request(response: Response) -> Response:
        if request.path in QUIET_PATHS or not access_log.isEnabledFor(logging.INFO):
            return response
        started = request.environ.get(STARTED_KEY)  # set by observability._stamp_start
        duration = default_timer() - started if started else None
        status = response.status_code
        if (
            not everything
            and status < 400
            and (duration is not None and duration < slow_seconds)
            and random() >= sample  # noqa: S311 - sampling, not security
        ):
            return response
        access_log.info(
            "request",
            extra={
                "method": request.method,
                "route": request.url_rule.rule if request.url_rule else None,
                "path": request.path,
                "status": status,
                "duration_ms": round(duration * 1000, 2) if duration is not None else None,
                "client_ip": request.remote_addr,
            },
        )
        return response
