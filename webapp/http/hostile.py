"""The edge check: text and structure no endpoint can handle are a 4xx before any view runs.

PostgreSQL refuses a NUL in text, a lone surrogate (what the JSON escape `"\\ud800"` decodes to)
has no UTF-8 form for the driver or a hash, and Python's JSON parser recurses once per nesting
level: each of them, let through, would surface deep inside a service as a 500 whose traceback
carries the SQL parameters. One `before_request` hook, registered first by the app factory,
checks every request, whatever its route, before rate limiting, authentication or a view reads
it:

- the query string is at most `MAX_QUERY_STRING` bytes (414 `uri-too-long`), below gunicorn's
  `limit_request_line`, so the API's own answer comes first;
- the path and every header value hold no control character (400 `malformed-request`);
- query parameter names and values (percent-decoded) and every string of a JSON body, field
  names included, hold no C0 control character other than tab, line feed and carriage return,
  and no lone surrogate (422 `validation-failed`, naming the field, never echoing the value);
- a JSON body nests at most `MAX_JSON_DEPTH` arrays/objects, counted on the raw bytes before
  any parser recurses (400 `malformed-request`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from timeit import default_timer
from typing import Any

from flask import Flask, request

from observability.context import STARTED_KEY
from webapp.errors import MalformedRequest, UriTooLong, ValidationFailed

MAX_JSON_DEPTH = 32
# Well above any list query this API takes (a 512-character cursor and a few filters), and under
# gunicorn's `limit_request_line` (gunicorn.conf.py) with room for the method and the path.
MAX_QUERY_STRING = 4096
MAX_REPORTED = 10  # field errors per answer: a body of 10,000 bad strings gets a short reply
MESSAGE = "Must not contain control characters or unpaired surrogates."
KEY_MESSAGE = "A field name contains control characters or unpaired surrogates."

# In text: C0 controls except \t \n \r, and surrogates (a valid pair decodes to one code point,
# so any surrogate left in a Python string is a lone one).
_HOSTILE_TEXT = re.compile("[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\ud800-\\udfff]")
# In a path or a header value, no control character at all (HTAB aside in headers, RFC 9110).
_CONTROL_IN_PATH = re.compile("[\\x00-\\x1f\\x7f]")
_HEADER_CONTROLS = bytes([*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F])
# A JSON string (escapes included) or a bracket: brackets inside strings are text, not depth.
_JSON_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_OPENERS = frozenset(b"[{")
_CLOSERS = frozenset(b"]}")


def check_request() -> None:
    """The `before_request` hook: raise a problem for hostile input, else return None.

    It runs on every request, so the common case is kept cheap: one C-level pass over all the
    header values together, and `str.isprintable()` (false for every control character and
    surrogate) clearing most strings before any regular expression."""
    environ = request.environ
    # Timed like any answer in the access log: the hook that stamps the start runs after this one.
    environ.setdefault(STARTED_KEY, default_timer())
    query: str = environ.get("QUERY_STRING", "")
    if len(query) > MAX_QUERY_STRING:
        raise UriTooLong(f"The query string exceeds {MAX_QUERY_STRING} bytes.")
    path: str = environ.get("PATH_INFO", "")
    if not path.isprintable() and _CONTROL_IN_PATH.search(path):
        raise MalformedRequest("The path contains a control character.")
    headers = "".join([v for k, v in environ.items() if k[:5] == "HTTP_" or k == "CONTENT_TYPE"])
    raw_headers = headers.encode("latin-1", "replace")  # WSGI header values are latin-1
    if len(raw_headers.translate(None, _HEADER_CONTROLS)) != len(raw_headers):
        raise MalformedRequest("A header value contains a control character.")
    errors: dict[str, list[str]] = {}
    if query:
        _check_query(errors)
    has_body = environ.get("CONTENT_LENGTH") or "HTTP_TRANSFER_ENCODING" in environ
    if not errors and has_body and request.is_json:
        _check_json_body(errors)
    if errors:
        raise ValidationFailed("The request body or parameters failed validation.", errors=errors)


def _hostile(text: str) -> bool:
    return not text.isprintable() and _HOSTILE_TEXT.search(text) is not None


def _check_query(errors: dict[str, list[str]]) -> None:
    for name, value in request.args.items(multi=True):
        if _hostile(name):
            _report(errors, "_schema", KEY_MESSAGE)
        elif _hostile(value):
            _report(errors, name, MESSAGE)


def _check_json_body(errors: dict[str, list[str]]) -> None:
    raw = request.get_data(cache=True)
    if not raw:
        return
    if too_deep(raw):
        raise MalformedRequest(f"The JSON body nests deeper than {MAX_JSON_DEPTH} levels.")
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        raise MalformedRequest("The request body is not valid JSON.") from None
    for path, text, is_key in _strings(document):
        if _hostile(text):
            _report(errors, path or "_schema", KEY_MESSAGE if is_key else MESSAGE)


def too_deep(raw: bytes) -> bool:
    """Whether the JSON text `raw` nests more than MAX_JSON_DEPTH arrays/objects (a cheap count
    of brackets decides most bodies without a scan)."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return False
    depth = 0
    for match in _JSON_TOKENS.finditer(raw):
        first = raw[match.start()]
        if first in _OPENERS:
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        elif first in _CLOSERS:
            depth -= 1
    return False


def _strings(document: Any) -> Iterator[tuple[str, str, bool]]:
    """(path, text, is a field name) for every string of a parsed JSON document; iterative, so
    that depth costs no recursion. Paths are dotted (`items.0.name`); "" is the top level."""
    stack: list[tuple[str, Any]] = [("", document)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            yield path, value, False
        elif isinstance(value, dict):
            for key, inner in value.items():
                if _hostile(key):
                    yield path, key, True
                    continue
                stack.append((f"{path}.{key}" if path else key, inner))
        elif isinstance(value, list):
            stack.extend(
                (f"{path}.{index}" if path else str(index), v) for index, v in enumerate(value)
            )


def _report(errors: dict[str, list[str]], field: str, message: str) -> None:
    if len(errors) < MAX_REPORTED and message not in errors.get(field, ()):
        errors.setdefault(field, []).append(message)


def init_app(app: Flask) -> None:
    """Register the check; call before any extension adds its own `before_request` hook."""
    app.before_request(check_request)
