"""Security headers on every response, CORS from the configured allow-list, JSON-only bodies."""

from __future__ import annotations

from flask import Flask, Response, current_app, request
from flask_cors import CORS

from webapp.errors import DomainError

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# Swagger UI: local assets only, no inline script (the initializer is a static file); its React
# components set inline styles, and "Try it out" calls this origin.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'"
)
EXPOSED_HEADERS = [
    "ETag",
    "Location",
    "Link",
    "X-Request-ID",
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "Idempotent-Replayed",
]
ALLOWED_HEADERS = [
    "Authorization",
    "Content-Type",
    "If-Match",
    "If-None-Match",
    "Idempotency-Key",
    "X-Request-ID",
    "X-API-Key",
]
BODY_METHODS = {"POST", "PUT", "PATCH"}
CORS_PREFIXES = ("/api/", "/.well-known/")


class UnsupportedMediaType(DomainError):
    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


def _require_json_body() -> None:
    if request.method not in BODY_METHODS or not request.path.startswith("/api/v1"):
        return
    has_body = bool(request.content_length) or request.headers.get("Transfer-Encoding")
    if has_body and not request.is_json:
        raise UnsupportedMediaType("Request bodies must be application/json.")


def _security_headers(response: Response) -> Response:
    headers = response.headers
    is_docs = request.path.startswith("/api/docs")
    headers.setdefault("Content-Security-Policy", DOCS_CSP if is_docs else API_CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
    headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    if current_app.config["GATEHOUSE"].is_production:
        headers.setdefault("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
    if "Cache-Control" not in headers and not is_docs:
        headers["Cache-Control"] = "no-store"
    if current_app.config["GATEHOUSE"].cors_origins and request.path.startswith(CORS_PREFIXES):
        # The CORS headers depend on Origin (present for allowed ones, absent otherwise), whatever
        # the number of allowed origins: shared caches (JWKS is public, max-age) must key on it.
        response.vary.add("Origin")
    return response


def init_app(app: Flask) -> None:
    settings = app.config["GATEHOUSE"]
    app.before_request(_require_json_body)
    app.after_request(_security_headers)
    if settings.cors_origins:
        CORS(
            app,
            resources={f"{prefix}*": {} for prefix in CORS_PREFIXES},
            origins=list(settings.cors_origins),
            expose_headers=EXPOSED_HEADERS,
            allow_headers=ALLOWED_HEADERS,
            methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            max_age=600,
        )
