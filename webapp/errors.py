"""Domain errors raised by services; `webapp.http.problems` turns each into problem+json.

Services raise these and know nothing of HTTP beyond the status each one maps to.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class DomainError(Exception):
    status = 400
    slug = "bad-request"
    title = "Bad request"

    def __init__(
        self,
        detail: str | None = None,
        *,
        slug: str | None = None,
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
        errors: Mapping[str, list[str]] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        if slug:
            self.slug = slug
        if title:
            self.title = title
        self.headers = dict(headers or {})
        self.errors = dict(errors) if errors else None
        self.extra = dict(extra or {})


class Unauthorized(DomainError):
    status = 401
    slug = "unauthorized"
    title = "Authentication required"

    def __init__(self, detail: str | None = None, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.headers.setdefault("WWW-Authenticate", 'Bearer realm="gatehouse"')


class InvalidCredentials(Unauthorized):
    slug = "invalid-credentials"
    title = "Invalid credentials"


class Forbidden(DomainError):
    status = 403
    slug = "forbidden"
    title = "Forbidden"


class EmailUnverified(Forbidden):
    slug = "email-unverified"
    title = "Email address not verified"


class MalformedRequest(DomainError):
    status = 400
    slug = "malformed-request"
    title = "Malformed request"


class NotFound(DomainError):
    status = 404
    slug = "not-found"
    title = "Not found"


class Conflict(DomainError):
    status = 409
    slug = "conflict"
    title = "Conflict"


class PreconditionFailed(DomainError):
    status = 412
    slug = "precondition-failed"
    title = "Precondition failed"


class UriTooLong(DomainError):
    status = 414
    slug = "uri-too-long"
    title = "URI too long"


class ValidationFailed(DomainError):
    status = 422
    slug = "validation-failed"
    title = "Validation failed"


class TooManyRequests(DomainError):
    status = 429
    slug = "rate-limited"
    title = "Too many requests"

    def __init__(self, detail: str | None = None, *, retry_after: int, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.retry_after = max(1, int(retry_after))
        self.headers["Retry-After"] = str(self.retry_after)


class AccountLocked(TooManyRequests):
    slug = "account-locked"
    title = "Too many failed attempts; try again later"


class LoginThrottled(TooManyRequests):
    """Too many failures for one email across all IPs: a delay until the window frees."""

    slug = "login-throttled"
    title = "Too many failed sign-ins for this account; try again later"


class ServiceUnavailable(DomainError):
    status = 503
    slug = "service-unavailable"
    title = "Service unavailable"
