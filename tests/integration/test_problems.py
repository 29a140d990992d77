"""Every error is an RFC 9457 problem+json document, and every problem type is documented."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from flask import abort
from werkzeug.exceptions import default_exceptions

from tests.support.problems import assert_problem
from webapp.http.problems import HTTP_SLUGS

ROOT = Path(__file__).resolve().parents[2]


def test_malformed_json_is_a_400_problem(client):
    response = client.post(
        "/api/v1/auth/login", data='{"email": "a@example.com",', content_type="application/json"
    )
    body = assert_problem(response, 400, "malformed-request")
    assert body["instance"] == "/api/v1/auth/login"


def test_an_unknown_field_is_a_422_problem_naming_the_field(client):
    response = client.post(
        "/api/v1/auth/login",
        json={"email": "a@example.com", "password": "whatever-it-is", "stay_signed_in": True},
    )
    body = assert_problem(response, 422, "validation-failed")
    assert body["errors"] == {"stay_signed_in": ["Unknown field."]}


def test_a_field_breaking_the_schema_is_listed_with_its_messages(client):
    response = client.post("/api/v1/auth/login", json={"email": "not-an-email", "password": "x"})
    body = assert_problem(response, 422, "validation-failed")
    assert list(body["errors"]) == ["email"]
    assert all(isinstance(message, str) for message in body["errors"]["email"])


def test_a_body_that_is_not_json_is_a_415_problem(client):
    response = client.post(
        "/api/v1/auth/login",
        data="email=a@example.com",
        content_type="application/x-www-form-urlencoded",
    )
    assert_problem(response, 415, "unsupported-media-type")


def test_a_body_that_is_too_large_is_a_413_problem(client):
    payload = '{"email": "' + "a" * (70 * 1024) + '"}'
    response = client.post("/api/v1/auth/login", data=payload, content_type="application/json")
    assert_problem(response, 413, "payload-too-large")


def test_an_unknown_route_is_a_404_problem(client):
    response = client.get("/api/v1/no-such-thing")
    body = assert_problem(response, 404, "not-found")
    assert body["instance"] == "/api/v1/no-such-thing"


def test_a_wrong_method_is_a_405_problem_with_allow(client):
    response = client.delete("/api/v1/auth/login")
    assert_problem(response, 405, "method-not-allowed")
    allowed = {m.strip() for m in response.headers["Allow"].split(",")}
    assert "POST" in allowed
    assert "DELETE" not in allowed


def test_a_missing_token_is_a_401_problem_with_www_authenticate(client):
    response = client.get("/api/v1/users/me")
    assert_problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_an_unexpected_exception_is_a_500_problem_without_internals(make_app):
    app = make_app()

    @app.get("/boom-for-test")
    def boom():
        raise RuntimeError("secret-internal-detail in /srv/gatehouse/webapp/thing.py")

    response = app.test_client().get("/boom-for-test")
    body = assert_problem(response, 500, "internal-error")
    text = response.get_data(as_text=True)
    for leak in ("Traceback", "RuntimeError", "secret-internal-detail", ".py", 'File "'):
        assert leak not in text
    assert body["instance"] == "/boom-for-test"


def test_an_http_error_without_a_dedicated_slug_is_still_a_problem(make_app):
    # e.g. a Range past the end of a docs asset is a 416; take any status HTTP_SLUGS lacks.
    status = min(code for code in default_exceptions if code >= 400 and code not in HTTP_SLUGS)
    app = make_app()

    @app.get("/unmapped-for-test")
    def unmapped():
        abort(status)

    response = app.test_client().get("/unmapped-for-test")
    assert_problem(response, status, "http-error")


def _emittable_slugs() -> set[str]:
    """Every problem slug the code can emit, found by reading the source of `webapp/`."""
    import webapp.errors

    slugs = set(HTTP_SLUGS.values())
    pending = [webapp.errors.DomainError]
    while pending:
        cls = pending.pop()
        slugs.add(cls.slug)
        pending.extend(cls.__subclasses__())
    for path in (ROOT / "webapp").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "slug":
                value = node.value
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    slugs.add(value.value)
            elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "slug" for t in node.targets
            ):
                if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                    slugs.add(node.value.value)
            elif isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                args = node.args
                # problem_response(status, "slug", ...) and HTTP_SLUGS.get(status, "fallback")
                if name in ("problem_response", "get") and len(args) >= 2:
                    target = func.value if isinstance(func, ast.Attribute) else None
                    if name == "get" and getattr(target, "id", None) != "HTTP_SLUGS":
                        continue
                    if isinstance(args[1], ast.Constant) and isinstance(args[1].value, str):
                        slugs.add(args[1].value)
    return slugs


def test_the_slug_scan_finds_the_known_kinds_of_problem():
    slugs = _emittable_slugs()
    # one from each source: a DomainError class, HTTP_SLUGS, a slug= literal, the fallback
    assert {"email-unverified", "method-not-allowed", "invalid-token", "http-error"} <= slugs


@pytest.mark.parametrize("slug", sorted(_emittable_slugs()))
def test_every_problem_slug_the_code_can_emit_is_documented(slug):
    text = (ROOT / "docs" / "problems.md").read_text()
    # a section of its own: "## <slug>" (backticks allowed), not a passing mention in prose
    heading = re.compile(rf"^#+\s+`?{re.escape(slug)}`?\s*$", re.MULTILINE)
    assert heading.search(text), f"docs/problems.md has no section for the problem type {slug!r}"


def test_an_unreachable_database_is_a_503_with_retry_after_not_a_500(make_app, member):
    broken = make_app(database_url="postgresql://postgres@127.0.0.1:1/nowhere").test_client()
    response = broken.get(f"/api/v1/users/{member.id}", headers=member.headers)
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert response.json["type"].endswith("/service-unavailable")
    assert response.headers["Retry-After"] == "5"
