"""The security headers middleware on its own: what a view set is kept, Vary gains Origin once."""

from __future__ import annotations

from typing import Any

import pytest

from webapp.http.headers import API_CSP, SecurityHeadersMiddleware


def serve(
    path: str, view_headers: list[tuple[str, str]], *, production: bool = False, cors: bool = True
) -> list[tuple[str, str]]:
    def view(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", list(view_headers))
        return [b"{}"]

    sent: list[tuple[str, str]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        sent.extend(headers)

    middleware = SecurityHeadersMiddleware(view, production=production, cors=cors)
    middleware({"PATH_INFO": path}, start_response)
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
