"""Security headers on every response, CORS from the configured allow-list, JSON-only bodies.

CORS is a few headers added as the response starts (ADR 0006): an allowed `Origin` on a path
under /api/ or /.well-known/ gets `Access-Control-Allow-Origin` and the exposed headers, and a
preflight (OPTIONS with `Access-Control-Request-Method`) the allowed methods, request headers and
max-age; any other origin gets none. Flask answers the preflight itself (its automatic OPTIONS).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from flask import Flask, request

from webapp.config import settings_of
from webapp.errors import DomainError

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment  # types only

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
ALLOWED_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
PREFLIGHT_MAX_AGE = 600
BODY_METHODS = {"POST", "PUT", "PATCH"}
CORS_PREFIXES = ("/api/", "/.well-known/")
DOCS_PREFIX = "/api/docs"


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


class SecurityHeadersMiddleware:
    """The security headers, added to the header list of every response as it starts.

    A WSGI middleware rather than an `after_request` hook: it covers every response (errors
    raised outside a view too) and costs a scan of a short list instead of werkzeug `Headers`
    calls. A header the view set itself (a CSP, a Cache-Control) is left as it is.
    """

    def __init__(
        self, app: WSGIApplication, *, production: bool, cors_origins: Iterable[str] = ()
    ) -> None:
        self.app = app
        self.cors_origins = frozenset(cors_origins)
        self.any_origin = "*" in self.cors_origins  # refused in production
        fixed = [
            ("X-Content-Type-Options", "nosniff"),
            ("X-Frame-Options", "DENY"),
            ("Referrer-Policy", "no-referrer"),
            ("Cross-Origin-Opener-Policy", "same-origin"),
            ("Cross-Origin-Resource-Policy", "same-origin"),
            ("Permissions-Policy", "camera=(), microphone=(), geolocation=()"),
        ]
        if production:
            fixed.append(("Strict-Transport-Security", "max-age=63072000; includeSubDomains"))
        self.fixed = [(name.lower(), (name, value)) for name, value in fixed]
        self.exposed = ("Access-Control-Expose-Headers", ", ".join(EXPOSED_HEADERS))
        self.preflight = [
            ("Access-Control-Allow-Methods", ", ".join(ALLOWED_METHODS)),
            ("Access-Control-Allow-Headers", ", ".join(ALLOWED_HEADERS)),
            ("Access-Control-Max-Age", str(PREFLIGHT_MAX_AGE)),
        ]

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        is_docs = path.startswith(DOCS_PREFIX)
        cors_path = bool(self.cors_origins) and path.startswith(CORS_PREFIXES)
        cors: list[tuple[str, str]] = []
        if cors_path:
            origin = environ.get("HTTP_ORIGIN")
            if origin is not None and (origin in self.cors_origins or self.any_origin):
                cors.append(("Access-Control-Allow-Origin", origin))
                preflight = environ.get("REQUEST_METHOD") == "OPTIONS" and environ.get(
                    "HTTP_ACCESS_CONTROL_REQUEST_METHOD"
                )
                if preflight:
                    cors.extend(self.preflight)
                else:
                    cors.append(self.exposed)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            present = {name.lower() for name, _ in headers}
            headers.extend(header for lower, header in self.fixed if lower not in present)
            if "content-security-policy" not in present:
                headers.append(("Content-Security-Policy", DOCS_CSP if is_docs else API_CSP))
            if "cache-control" not in present and not is_docs:
                headers.append(("Cache-Control", "no-store"))
            if cors_path:
                # The CORS headers depend on Origin (present for allowed ones, absent otherwise),
                # whatever the number of allowed origins: shared caches (JWKS is public, max-age)
                # must key on it.
                headers.extend(cors)
                _add_vary_origin(headers)
            return start_response(status, headers, exc_info)

        return self.app(environ, start)


def _add_vary_origin(headers: list[tuple[str, str]]) -> None:
    for index, (name, value) in enumerate(headers):
        if name.lower() == "vary":
            if "origin" not in value.lower() and value.strip() != "*":
                headers[index] = (name, f"{value}, Origin")
            return
    headers.append(("Vary", "Origin"))


def init_app(app: Flask) -> None:
    settings = settings_of(app)
    app.before_request(_require_json_body)
    # Flask's documented way to wrap the WSGI app; mypy sees the assignment of a method.
    app.wsgi_app = SecurityHeadersMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, production=settings.is_production, cors_origins=settings.cors_origins
    )
