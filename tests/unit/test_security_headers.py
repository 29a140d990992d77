"""The security headers middleware on its own: what a view set is kept, Vary gains Origin once."""

from __future__ import annotations

from typing import Any

import pytest

from webapp.http.headers import API_CSP, SecurityHeadersMiddleware

ALLOWED = "https://app.example"


def serve(
    path: str,
    view_headers: list[tuple[str, str]],
    *,
    production: bool = False,
    cors: bool = True,
    environ: dict[str, str] | None = None,
) -> list[tuple[str, str]]:
    def view(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", list(view_headers))
        return [b"{}"]

    sent: list[tuple[str, str]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        sent.extend(headers)

    origins = [ALLOWED] if cors else []
    middleware = SecurityHeadersMiddleware(view, production=production, cors_origins=origins)
    middleware({"PATH_INFO": path, **(environ or {})}, start_response)
    return sent


def values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [value for key, value in headers if key.lower() == name.lower()]


def test_every_header_is_added_once_with_the_api_policy():
    sent = serve("/api/v1/users/me", [("Content-Type", "application/json")])

    assert values(sent, "Content-Security-Policy") == [API_CSP]
    assert values(sent, "Cache-Control") == ["no-store"]
    assert values(sent, "X-Content-Type-Options") == ["nosniff"]
    assert values(sent, "Strict-Transport-Security") == []


def test_headers_the_view_set_are_kept():
    sent = serve(
        "/.well-known/jwks.json",
        [("Cache-Control", "public, max-age=300"), ("x-frame-options", "SAMEORIGIN")],
        production=True,
    )

    assert values(sent, "Cache-Control") == ["public, max-age=300"]
    assert values(sent, "X-Frame-Options") == ["SAMEORIGIN"]
    assert values(sent, "Strict-Transport-Security") != []


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ([], ["Origin"]),
        ([("Vary", "Accept-Encoding")], ["Accept-Encoding, Origin"]),
        ([("Vary", "origin")], ["origin"]),
        ([("Vary", "*")], ["*"]),
    ],
)
def test_cors_resources_vary_on_origin_exactly_once(given, expected):
    assert values(serve("/api/v1/users/", given), "Vary") == expected


def test_without_cors_nothing_varies_on_origin():
    assert values(serve("/api/v1/users/", [], cors=False), "Vary") == []
    assert values(serve("/health", [], cors=True), "Vary") == []


def test_an_allowed_origin_gets_its_origin_and_the_exposed_headers_only():
    sent = serve("/api/v1/users/me", [], environ={"HTTP_ORIGIN": ALLOWED})
    assert values(sent, "Access-Control-Allow-Origin") == [ALLOWED]
    assert values(sent, "Access-Control-Expose-Headers") != []
    assert values(sent, "Access-Control-Allow-Methods") == []


def test_a_preflight_gets_the_methods_headers_and_max_age():
    preflight = {
        "HTTP_ORIGIN": ALLOWED,
        "REQUEST_METHOD": "OPTIONS",
        "HTTP_ACCESS_CONTROL_REQUEST_METHOD": "PATCH",
    }
    sent = serve("/api/v1/users/me", [], environ=preflight)
    assert values(sent, "Access-Control-Allow-Origin") == [ALLOWED]
    assert "PATCH" in values(sent, "Access-Control-Allow-Methods")[0]
    assert values(sent, "Access-Control-Max-Age") == ["600"]
    assert values(sent, "Access-Control-Expose-Headers") == []


def test_another_origin_gets_nothing_but_vary():
    sent = serve("/api/v1/users/me", [], environ={"HTTP_ORIGIN": "https://evil.example"})
    assert [k for k, _ in sent if k.lower().startswith("access-control-")] == []
    assert values(sent, "Vary") == ["Origin"]
