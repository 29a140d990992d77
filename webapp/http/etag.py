"""Conditional requests: the `If-None-Match` and `If-Match` headers.

`If-Match` is honoured when sent (412 on mismatch) and not required (no 428), as the API
contract says; the comparison itself lives in services (`webapp.versions`), which own the
version.
"""

from __future__ import annotations

from flask import request


def not_modified(etag: str) -> bool:
    """True when the client's If-None-Match already names this representation."""
    header = request.headers.get("If-None-Match")
    if not header:
        return False
    candidates = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return "*" in candidates or etag in candidates


def if_match_header() -> str | None:
    return request.headers.get("If-Match")
