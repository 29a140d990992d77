"""Rate limits (flask-limiter, Redis storage): per endpoint and per user or client IP.

The client IP is `request.remote_addr`, which ProxyFix rewrites from `X-Forwarded-For` only through
`TRUSTED_PROXIES` hops. Headers follow the IETF RateLimit draft: `RateLimit-Reset` is a number of
seconds, and a 429 also carries `Retry-After`.
"""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, current_app, request

from observability import metrics
from observability.metrics import route
from webapp.config import current_settings, settings_of
from webapp.extensions import limiter
from webapp.http.access import api_key_principal
from webapp.http.bearer import bearer_claims
from webapp.http.origin import client_ip

log = logging.getLogger(__name__)


def rate_limit_key() -> str:
    """A verified bearer token's user, else the client IP.

    The token is verified (and memoised for the auth layer) so that a forged `sub` cannot drain
    somebody else's budget.
    """
    claims = bearer_claims(optional=True)
    if claims is not None:
        return f"user:{claims['sub']}"
    if "X-API-Key" in request.headers:
        # Verified like the bearer token, and keyed by owner: more keys mean no more budget.
        principal = api_key_principal(optional=True)
        if principal is not None:
            return f"user:{principal.user_id}"
    return f"ip:{client_ip()}"


def ip_key() -> str:
    return f"ip:{client_ip()}"


def _headers(response: Response) -> Response:
    if not limiter.enabled:
        return response
    try:
        current = limiter.current_limit
        if current is None:
            return response
        reset_in = max(0, int(current.reset_at - time.time()))
        response.headers["RateLimit-Limit"] = str(current.limit.amount)
        response.headers["RateLimit-Remaining"] = str(max(0, current.remaining))
        response.headers["RateLimit-Reset"] = str(reset_in)
        if response.status_code == 429:
            # A lockout answers 429 with its own, longer wait: the limiter's window must not
            # shorten it, or clients would retry into the lockout.
            retry_after = max(1, reset_in)
            given = response.headers.get("Retry-After", "")
            if given.isdigit():
                retry_after = max(retry_after, int(given))
            response.headers["Retry-After"] = str(retry_after)
            if current.breached:
                metrics.RATE_LIMITED.labels(route=route(request)).inc()
    except Exception:
        current_app.logger.debug("rate limit headers unavailable", exc_info=True)
    return response


def default_limit() -> str:
    """The default limit of the application in context.

    The limiter is one module-level object: flask-limiter keeps the default limits of the first
    app it was bound to, so a string here would leak one app's budget into every later app.
    """
    return current_settings().ratelimit_default


@limiter.request_filter
def disabled_for_this_app() -> bool:
    """Request filter: the app in context has rate limits off (RATELIMIT_ENABLED=false).

    flask-limiter's `enabled` flag lives on the shared limiter and follows the app bound last,
    and route decorators (the auth budget) consult it on every app: without this filter, building
    one app with limits on would start limiting another process-mate that has them off.
    """
    return not current_settings().ratelimit_enabled


def limits_storage_uri(redis_url: str | None) -> str:
    """The `limits` library spells Unix-socket Redis URLs `redis+unix://`."""
    if not redis_url:
        return "memory://"
    if redis_url.startswith("unix://"):
        return "redis+unix://" + redis_url.removeprefix("unix://")
    return redis_url


def warn_if_off_in_production(app: Flask) -> None:
    """Production runs without limits only through UNSAFE_PRODUCTION_WITHOUT_RATELIMIT (capacity
    benchmarks): every process start says so in its log."""
    settings = settings_of(app)
    if settings.is_production and not settings.ratelimit_enabled:
        log.warning(
            "rate limiting is OFF in production (UNSAFE_PRODUCTION_WITHOUT_RATELIMIT=true): "
            "nothing slows down credential stuffing or abuse"
        )


def init_app(app: Flask) -> None:
    app.extensions["gatehouse_rate_limit_key"] = rate_limit_key
    settings = settings_of(app)
    app.config.update(
        RATELIMIT_ENABLED=settings.ratelimit_enabled,
        RATELIMIT_STORAGE_URI=limits_storage_uri(settings.redis_url),
        RATELIMIT_STORAGE_OPTIONS={"socket_timeout": 0.25, "socket_connect_timeout": 0.25},
        RATELIMIT_STRATEGY="fixed-window",
        RATELIMIT_DEFAULT=default_limit,
        RATELIMIT_HEADERS_ENABLED=False,
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True,
        RATELIMIT_SWALLOW_ERRORS=True,
        RATELIMIT_KEY_PREFIX="gh-rl",
    )
    limiter.init_app(app)
    app.after_request(_headers)
