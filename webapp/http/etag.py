"""Conditional requests: strong ETags from a resource version, If-None-Match and If-Match.

`If-Match` is honoured when sent (412 on mismatch) and not required (no 428), as the API
contract says; the comparison itself lives in services, which own the version.
"""

from __future__ import annotations

from flask import request

from webapp.errors import PreconditionFailed


def etag_value(resource_id: object, version: int) -> str:
    return f'"{resource_id}.{version}"'


def not_modified(etag: str) -> bool:
    """True when the client's If-None-Match already names this representation."""
    header = request.headers.get("If-None-Match")
    if not header:
        return False
    candidates = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return "*" in candidates or etag in candidates


def if_match_header() -> str | None:
    return request.headers.get("If-Match")


def require_match(if_match: str | None, current_etag: str) -> None:
    """Raise 412 when an If-Match was sent and names none of the current representation."""
    if if_match is None:
        return
    candidates = {tag.strip() for tag in if_match.split(",")}
    if "*" not in candidates and current_etag not in candidates:
        raise PreconditionFailed("The resource changed since you read it (If-Match mismatch).")
