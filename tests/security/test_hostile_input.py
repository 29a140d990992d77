"""Hostile input is a 4xx at the edge, never a 500 that logs SQL parameters.

A NUL byte or a lone surrogate in any string (body fields, field names, query parameters, the
path), a JSON body nested 20,000 levels deep, or a request line of a few kilobytes must be a 4xx
problem+json at the edge, for every operation of the OpenAPI document, signed in or not, and
never reach the database or a password hash.

OWASP ASVS 4.0.3: V5.1.3 (all input is validated, positive allow lists), V5.1.4 (structured data
is strongly typed and validated), V5.3.x / V13.1.1 (every endpoint applies the same input
handling), V7.4.1 (a generic message is shown on an unexpected error, never a stack trace) and
V14.1.1 (the web server's own limits answer as the API does).
"""

from __future__ import annotations

import ast
import functools
import json
import re
import socket
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.support.accounts import Account
from webapp.http import hostile

ROOT = Path(__file__).resolve().parents[2]
PROBLEM = "application/problem+json"
NUL = "\x00"
SURROGATE = "\ud800"  # what the JSON escape "\ud800" decodes to
# Percent-encoded forms that reach a query string (a lone surrogate has no UTF-8 form: werkzeug
# decodes its CESU bytes to U+FFFD, harmless, so only controls are checked there).
QUERY_VALUES = {"nul": "%00", "control": "%07", "cesu-surrogate": "%ED%A0%80"}
DEEP = 20_000
DEEP_OBJECTS = 10_000  # six bytes a level: deep, yet under the 64 KiB body limit
LONG = "A" * 5_000
BODY_HOSTILE = {"nul": NUL, "surrogate": SURROGATE, "control": "\x1b[31m"}


def _client_ip(n: int) -> dict[str, str]:
    return {"REMOTE_ADDR": f"198.51.100.{n % 250 + 1}"}


def operations(client: FlaskClient) -> list[tuple[str, str, dict[str, Any]]]:
    doc = client.get("/api/openapi.json").get_json()
    found = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                found.append((method.upper(), path, {**op, "_doc": doc}))
    return found


def body_schema(op: dict[str, Any]) -> dict[str, Any] | None:
    content = op.get("requestBody", {}).get("content", {}).get("application/json")
    if content is None:
        return None
    schema = content["schema"]
    if "$ref" in schema:
        schema = op["_doc"]["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return dict(schema)


def query_params(op: dict[str, Any]) -> list[str]:
    return [p["name"] for p in op.get("parameters", []) if p["in"] == "query"]


def fill_path(path: str, user_id: uuid.UUID, value: str | None = None) -> str:
    """Real-looking ids (the member's id for `user_id`), or `value` in every path parameter."""

    def one(match: re.Match[str]) -> str:
        if value is not None:
            return value
        return str(user_id) if match.group(1) == "user_id" else str(uuid.uuid4())

    return re.sub(r"\{([^}]+)\}", one, path)


class Fuzzer:
    def __init__(self, app: Flask, make_user: Callable[..., Account]) -> None:
        self.app = app
        self.make_user = make_user
        self.sent = 0
        self.failures: list[str] = []

    def token(self) -> str:
        # A fresh administrator per operation: one may end its session, and on the original code
        # hostile passwords reached the checks that count towards the account lockout.
        return self.make_user("admin").access_token

    def send(
        self,
        label: str,
        method: str,
        url: str,
        *,
        data: str | bytes | None = None,
        headers: dict[str, str] | None = None,
        rejected: bool = True,
    ) -> TestResponse:
        """One request; `rejected`: it must be refused with a 400 or 422, not merely not fail."""
        self.sent += 1
        response = self.app.test_client().open(
            url,
            method=method,
            data=data,
            headers={"Content-Type": "application/json", **(headers or {})},
            environ_base=_client_ip(self.sent),
        )
        where = f"{label}: {method} {url[:120]} -> {response.status_code}"
        if response.status_code >= 500:
            self.failures.append(f"{where} (server error) {response.get_data()[:200]!r}")
        elif response.status_code >= 400 and response.mimetype != PROBLEM:
            self.failures.append(f"{where} answered {response.mimetype}, not problem+json")
        elif rejected and response.status_code not in (400, 422):
            self.failures.append(f"{where}: hostile input was not refused")
        return response


def fuzz_operation(
    fuzzer: Fuzzer, method: str, path: str, op: dict[str, Any], user_id: uuid.UUID, auth: bool
) -> None:
    headers = {"Authorization": f"Bearer {fuzzer.token()}"} if auth else {}
    url = fill_path(path, user_id)
    who = "admin" if auth else "anonymous"
    schema = body_schema(op)
    send = functools.partial(fuzzer.send, headers=headers)

    # Every operation, documented parameters or not: the edge reads the whole query string.
    for name, value in QUERY_VALUES.items():
        rejected = name != "cesu-surrogate"
        send(f"{who} query {name}", method, f"{url}?x{value}y=1", rejected=rejected)
        send(f"{who} query value {name}", method, f"{url}?q=a{value}b", rejected=rejected)
    for param in query_params(op):
        for name, value in QUERY_VALUES.items():
            send(
                f"{who} {param}={name}",
                method,
                f"{url}?{param}={value}",
                rejected=name != "cesu-surrogate",
            )
        send(f"{who} long {param}", method, f"{url}?{param}={LONG}", rejected=False)
    if "{" in path:
        send(f"{who} path NUL", method, fill_path(path, user_id, "%00"), rejected=False)
        send(f"{who} path surrogate", method, fill_path(path, user_id, "%ED%A0%80"), rejected=False)

    if method == "GET" or (method == "DELETE" and schema is None):
        return
    # Bodies: every documented property (or a made-up one) holding the hostile string, the
    # hostile string as a field name, deep nesting at the top and under a field.
    properties = list((schema or {}).get("properties", {})) or ["name"]
    for name, value in BODY_HOSTILE.items():
        for prop in properties:
            body = json.dumps({p: (value if p == prop else "x") for p in properties})
            send(f"{who} body {prop}={name}", method, url, data=body)
        send(f"{who} body key {name}", method, url, data=json.dumps({value: "x"}))
        send(f"{who} body list {name}", method, url, data=json.dumps({properties[0]: [value]}))
    send(f"{who} deep array", method, url, data="[" * DEEP + "]" * DEEP)
    send(f"{who} deep object", method, url, data='{"a":' * DEEP_OBJECTS + "1" + "}" * DEEP_OBJECTS)
    send(
        f"{who} deep field",
        method,
        url,
        data=json.dumps({properties[0]: "x"})[:-1] + ', "z": ' + "[" * DEEP + "]" * DEEP + "}",
    )
    send(f"{who} deep unclosed", method, url, data="[" * DEEP)
    send(
        f"{who} huge number",
        method,
        url,
        data=json.dumps({properties[0]: 1})[:-2] + "9" * 5000 + "}",
    )
    long_body = json.dumps(dict.fromkeys(properties, LONG))
    send(f"{who} long strings", method, url, data=long_body, rejected=False)


def test_every_operation_refuses_hostile_input_with_a_problem(
    app: Flask, client: FlaskClient, make_user: Callable[..., Account], member: Account
):
    fuzzer = Fuzzer(app, make_user)
    ops = operations(client)
    assert len(ops) >= 30, "the OpenAPI document lost operations"
    for method, path, op in ops:
        for auth in (True, False):
            fuzz_operation(fuzzer, method, path, op, member.id, auth)
    assert fuzzer.sent > 1000
    assert not fuzzer.failures, f"{len(fuzzer.failures)} failures:\n" + "\n".join(
        fuzzer.failures[:60]
    )


def test_the_refusal_names_the_field_and_never_echoes_the_value(client: FlaskClient):
    response = client.post(
        "/api/v1/auth/register",
        data=json.dumps({"email": "a@example.com", "name": "x\x00y", "password": "\ud800"}),
        content_type="application/json",
    )
    assert response.status_code == 422, response.get_json()
    assert response.mimetype == PROBLEM
    body = response.get_json()
    assert body["type"] == "/problems/validation-failed"
    assert set(body["errors"]) == {"name", "password"}
    assert "\\u0000" not in response.get_data(as_text=True)


def test_deep_nesting_is_a_malformed_request(client: FlaskClient):
    response = client.post(
        "/api/v1/auth/login", data="[" * DEEP + "]" * DEEP, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.get_json()["type"] == "/problems/malformed-request"
    nested = '{"email": ' + "[" * (hostile.MAX_JSON_DEPTH + 1) + "]" * (hostile.MAX_JSON_DEPTH + 1)
    response = client.post("/api/v1/auth/login", data=nested + "}", content_type="application/json")
    assert response.status_code == 400
    # Brackets inside strings are text, not depth.
    text = json.dumps({"email": "[" * 200 + "@example.com", "password": "{" * 100})
    response = client.post("/api/v1/auth/login", data=text, content_type="application/json")
    assert response.status_code in (401, 422), response.get_json()


def test_control_characters_in_headers_are_refused(client: FlaskClient, admin: Account):
    response = client.post(
        "/api/v1/users/",
        json={"email": "n@example.com", "name": "N", "password": "pale-Orbit-93-lantern"},
        headers={**admin.headers, "Idempotency-Key": "k\x00ey"},
    )
    assert response.status_code == 400
    assert response.mimetype == PROBLEM
    response = client.get("/api/v1/users/me", headers={"X-API-Key": "gh_live_\x00"})
    assert response.status_code == 400


def test_a_query_string_over_the_cap_is_a_problem(client: FlaskClient, admin: Account):
    response = client.get(
        "/api/v1/api-keys/?cursor=" + "A" * hostile.MAX_QUERY_STRING, headers=admin.headers
    )
    assert response.status_code == 414
    assert response.mimetype == PROBLEM
    assert response.get_json()["type"] == "/problems/uri-too-long"
    # Under the cap, the parameter's own validation answers.
    response = client.get("/api/v1/api-keys/?cursor=" + "A" * 1000, headers=admin.headers)
    assert response.status_code == 422
    assert "cursor" in response.get_json()["errors"]


def test_gunicorn_limits_sit_above_the_api_caps():
    # Read, not executed: the file sets up Prometheus' multiprocess directory when run.
    tree = ast.parse((ROOT / "gunicorn.conf.py").read_text())
    config = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    request_line_overhead = len("DELETE  HTTP/1.1") + 200  # method, version, a long path
    assert config["limit_request_line"] >= hostile.MAX_QUERY_STRING + request_line_overhead
    assert config["limit_request_field_size"] >= 8190


def _raw_request(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `request` (which asks to close the connection) and read the whole answer."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


@pytest.fixture
def served(gunicorn: tuple[subprocess.Popen[bytes], int]) -> int:
    return gunicorn[1]


@pytest.mark.slow
def test_gunicorn_answers_problem_json_for_what_it_refuses_itself(served: int):
    """Through the production server: the API's cap answers first, and what gunicorn itself
    refuses (a request line or a header past its limits, a broken request line) is
    problem+json too."""

    def problem(request: bytes) -> tuple[int, dict[str, Any]]:
        status, headers, body = _raw_request(served, request)
        assert headers["content-type"] == PROBLEM, (status, headers, body[:200])
        document = json.loads(body)
        assert document["status"] == status
        return status, document

    def get(target: str) -> bytes:
        return f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()

    # Past the API's own cap but within gunicorn's request line: the API answers.
    status, body = problem(get("/api/v1/api-keys/?cursor=" + "A" * (hostile.MAX_QUERY_STRING + 10)))
    assert (status, body["type"]) == (414, "/problems/uri-too-long")
    assert body["request_id"]
    # Past gunicorn's own limits: gunicorn answers, in the same format.
    status, body = problem(get("/api/v1/api-keys/?cursor=" + "A" * 9000))
    assert (status, body["type"]) == (414, "/problems/uri-too-long")
    status, body = problem(b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, body["type"]) == (400, "/problems/malformed-request")
    big_header = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n"
    status, body = problem(big_header)
    assert (status, body["type"]) == (431, "/problems/header-too-large")
