"""X-Request-ID, security headers (API and docs page), HSTS in production, and CORS."""

from __future__ import annotations

import re

import pytest

API_PATHS = ("/api/v1/users/me", "/api/v1/no-such-route", "/health", "/api/openapi.json")
GENERATED_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
ALLOWED_ORIGIN = "https://app.example"


def _directives(csp: str) -> dict[str, list[str]]:
    parsed = {}
    for part in csp.split(";"):
        words = part.split()
        if words:
            parsed[words[0]] = words[1:]
    return parsed


# --- X-Request-ID -----------------------------------------------------------------------------


def test_a_valid_incoming_request_id_is_echoed(client):
    response = client.get("/health", headers={"X-Request-ID": "req-2024.01:abc_DEF"})
    assert response.headers["X-Request-ID"] == "req-2024.01:abc_DEF"


def test_a_valid_incoming_request_id_is_echoed_on_errors_and_in_the_problem(client):
    response = client.get("/api/v1/users/me", headers={"X-Request-ID": "trace-0123456789"})
    assert response.status_code == 401
    assert response.headers["X-Request-ID"] == "trace-0123456789"
    assert response.json["request_id"] == "trace-0123456789"


@pytest.mark.parametrize(
    "bad_id",
    ["x" * 129, "has spaces in it", "short", "semi;colon-0123", "ünïcode-0123456"],
    ids=["too-long", "spaces", "too-short", "separator", "non-ascii"],
)
def test_an_invalid_incoming_request_id_is_replaced(client, bad_id):
    response = client.get("/health", headers={"X-Request-ID": bad_id})
    echoed = response.headers["X-Request-ID"]
    assert echoed != bad_id
    assert GENERATED_ID.match(echoed)


def test_a_request_id_with_a_newline_is_replaced(client):
    # Werkzeug's client refuses such a header, so it goes straight into the WSGI environ.
    response = client.get(
        "/health", environ_overrides={"HTTP_X_REQUEST_ID": "abcdefgh\r\nSet-Cookie: x=1"}
    )
    echoed = response.headers["X-Request-ID"]
    assert "\n" not in echoed
    assert "Set-Cookie" not in echoed
    assert "Set-Cookie" not in response.headers
    assert GENERATED_ID.match(echoed)


@pytest.mark.parametrize("path", API_PATHS)
def test_every_response_gets_a_generated_request_id(client, path):
    response = client.get(path)
    assert GENERATED_ID.match(response.headers["X-Request-ID"])


def test_generated_request_ids_are_unique_per_request(client):
    ids = {client.get("/health").headers["X-Request-ID"] for _ in range(5)}
    assert len(ids) == 5


# --- Security headers -------------------------------------------------------------------------


@pytest.mark.parametrize("path", API_PATHS)
def test_api_responses_carry_the_strict_security_headers(client, path):
    headers = client.get(path).headers
    csp = _directives(headers["Content-Security-Policy"])
    assert csp["default-src"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "no-store"


def test_security_headers_are_on_a_post_that_fails_validation(client):
    headers = client.post("/api/v1/auth/login", json={"nope": 1}).headers
    assert _directives(headers["Content-Security-Policy"])["default-src"] == ["'none'"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-store"


def test_the_docs_page_has_its_own_policy_allowing_only_local_scripts(client):
    response = client.get("/api/docs")
    assert response.status_code == 200
    csp = _directives(response.headers["Content-Security-Policy"])
    assert csp["default-src"] == ["'none'"]
    assert csp["script-src"] == ["'self'"]
    assert "'unsafe-inline'" not in csp["script-src"]
    assert "'unsafe-eval'" not in csp["script-src"]
    assert csp["connect-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert response.headers["X-Frame-Options"] == "DENY"


def test_hsts_is_not_sent_outside_production(client):
    assert "Strict-Transport-Security" not in client.get("/health").headers


def test_hsts_is_sent_in_production(make_app):
    app = make_app(env="production", ratelimit_enabled=True)  # production requires it
    headers = app.test_client().get("/health").headers
    hsts = headers["Strict-Transport-Security"]
    max_age = int(re.search(r"max-age=(\d+)", hsts).group(1))
    assert max_age >= 31536000
    assert "includeSubDomains" in hsts


# --- CORS -------------------------------------------------------------------------------------


@pytest.fixture
def cors_client(make_app):
    return make_app(cors_origins=(ALLOWED_ORIGIN,)).test_client()


def test_an_allowed_origin_gets_cors_headers_with_the_exposed_headers(cors_client):
    response = cors_client.get("/api/openapi.json", headers={"Origin": ALLOWED_ORIGIN})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    exposed = {
        h.strip().lower() for h in response.headers["Access-Control-Expose-Headers"].split(",")
    }
    assert {"x-request-id", "etag", "location", "link", "retry-after"} <= exposed
    assert {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"} <= exposed
    assert "Origin" in response.headers.get("Vary", "")


def test_an_allowed_origin_gets_cors_headers_on_errors_too(cors_client):
    response = cors_client.get("/api/v1/users/me", headers={"Origin": ALLOWED_ORIGIN})
    assert response.status_code == 401
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN


def test_another_origin_gets_no_cors_headers(cors_client):
    response = cors_client.get("/api/openapi.json", headers={"Origin": "https://evil.example"})
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Expose-Headers" not in response.headers


def test_cacheable_cors_resources_vary_on_origin_for_every_caller(cors_client):
    # JWKS is publicly cacheable: a shared cache must not hand one origin's answer to another.
    for origin in (ALLOWED_ORIGIN, "https://evil.example", None):
        headers = {"Origin": origin} if origin else {}
        response = cors_client.get("/.well-known/jwks.json", headers=headers)
        assert response.status_code == 200
        assert "origin" in {v.strip().lower() for v in response.headers["Vary"].split(",")}


def test_without_an_allow_list_no_origin_gets_cors_headers(client):
    response = client.get("/api/openapi.json", headers={"Origin": ALLOWED_ORIGIN})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_a_preflight_from_an_allowed_origin_is_answered(cors_client):
    response = cors_client.options(
        "/api/v1/users/me",
        headers={
            "Origin": ALLOWED_ORIGIN,
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "Authorization, Content-Type, If-Match",
        },
    )
    assert response.status_code in (200, 204)
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    methods = {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
    assert "PATCH" in methods
    allowed = {
        h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert {"authorization", "content-type", "if-match"} <= allowed
    assert int(response.headers["Access-Control-Max-Age"]) > 0


def test_a_preflight_from_another_origin_is_not_allowed(cors_client):
    response = cors_client.options(
        "/api/v1/users/me",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "PATCH"},
    )
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Methods" not in response.headers


def test_a_preflight_gets_no_exposed_headers_and_a_request_no_preflight_headers(cors_client):
    preflight = cors_client.options(
        "/api/v1/users/me",
        headers={"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "GET"},
    )
    request = cors_client.get("/api/v1/users/me", headers={"Origin": ALLOWED_ORIGIN})
    assert "Access-Control-Expose-Headers" not in preflight.headers
    assert "Access-Control-Allow-Methods" not in request.headers
    assert "Access-Control-Max-Age" not in request.headers


def test_an_allowed_origin_outside_the_api_gets_no_cors_headers(cors_client):
    response = cors_client.get("/health", headers={"Origin": ALLOWED_ORIGIN})
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers


def test_a_star_outside_production_allows_any_origin(make_app):
    client = make_app(cors_origins=("*",)).test_client()
    response = client.get("/api/openapi.json", headers={"Origin": "http://localhost:5173"})
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"


def test_an_origin_is_compared_exactly_not_as_a_pattern(make_app):
    client = make_app(cors_origins=("https://app.example",)).test_client()
    for origin in ("https://app.example.evil", "https://APP.example", "https://app.example/"):
        response = client.get("/api/openapi.json", headers={"Origin": origin})
        assert "Access-Control-Allow-Origin" not in response.headers, origin
