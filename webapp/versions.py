"""Versions of a resource as strong entity tags, and the optimistic-concurrency check on them.

A resource's tag is `"<id>.<version>"` (the row's `version` column). Services compare the tag a
client last read (`If-Match`, passed in as a plain string) with the current one under
`SELECT … FOR UPDATE`; `webapp.http.etag` reads and writes the headers.
"""

from __future__ import annotations

from webapp.errors import PreconditionFailed


def etag_value(resource_id: object, version: int) -> str:
    return f'"{resource_id}.{version}"'


def require_match(if_match: str | None, current_etag: str) -> None:
    """Raise 412 when an If-Match was sent and names none of the current representation."""
    if if_match is None:
        return
    candidates = {tag.strip() for tag in if_match.split(",")}
    if "*" not in candidates and current_etag not in candidates:
        raise PreconditionFailed("The resource changed since you read it (If-Match mismatch).")
