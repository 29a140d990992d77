"""Lists a page at a time: keyset cursors or offsets, for every list a service returns.

Keyset cursors order by (sort column, id), so a page boundary is a position, not a row count:
rows inserted while a client walks the list never shift it (no duplicates, no skips). The
cursor is opaque to clients: the sort key, the last row's sort value and its id, base64url JSON.
Plain values in, a `Page` out: `webapp.http.pagination` parses the query string and writes the
body and the `Link` header.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, TypeDecorator, func, select, tuple_
from sqlalchemy.orm import InstrumentedAttribute

from webapp.db import DbSession
from webapp.errors import ValidationFailed

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


@dataclass(frozen=True)
class Page:
    """One page of a list; `next_params` are the query parameters of the next page (None on the
    last)."""

    items: list[Any]
    next_cursor: str | None
    total: int | None
    next_params: dict[str, Any] | None

    def body(self) -> dict[str, Any]:
        return {"items": self.items, "next_cursor": self.next_cursor, "total": self.total}


def _encode_cursor(sort: str, value: Any, row_id: uuid.UUID) -> str:
    raw = json.dumps([sort, _dump(value), str(row_id)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _dump(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _decode_cursor(cursor: str, sort: str, parse: Callable[[Any], Any]) -> tuple[Any, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        cursor_sort, value, row_id = json.loads(base64.urlsafe_b64decode(padded))
        if cursor_sort != sort:
            raise ValueError("cursor belongs to another sort order")
        if not isinstance(row_id, str):
            raise TypeError("cursor position has no row id")
        return parse(value), uuid.UUID(row_id)
    except (ValueError, TypeError, binascii.Error, json.JSONDecodeError) as exc:
        raise ValidationFailed(
            "The cursor is not valid for this list.", errors={"cursor": [str(exc) or "invalid"]}
        ) from None


def _aware_datetime(value: Any) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("cursor timestamp has no time zone")
    return parsed


def _parser_for(column: InstrumentedAttribute[Any]) -> Callable[[Any], Any]:
    column_type = column.type
    if isinstance(column_type, TypeDecorator):
        # SQLAlchemy 2.1: a TypeDecorator's own python_type is `object`; its impl knows.
        column_type = column_type.impl_instance
    python_type = column_type.python_type
    if python_type is datetime:
        return _aware_datetime
    if python_type is uuid.UUID:
        return uuid.UUID

    def exact(value: Any) -> Any:
        if not isinstance(value, python_type):
            raise TypeError(f"cursor position is not a {python_type.__name__}")
        return value

    return exact


def paginate(
    session: DbSession,
    query: Select[Any],
    *,
    id_column: InstrumentedAttribute[Any],
    sort_columns: Mapping[str, InstrumentedAttribute[Any]],
    sort: str | None,
    default_sort: str,
    limit: int,
    cursor: str | None = None,
    offset: int | None = None,
) -> Page:
    """Run `query` for one page. `sort` is a key of `sort_columns`, `-` prefixed for descending."""
    sort = sort or default_sort
    descending = sort.startswith("-")
    key = sort.lstrip("-")
    if key not in sort_columns:
        raise ValidationFailed(
            "Unknown sort order.",
            errors={"sort": [f"must be one of: {', '.join(_sort_choices(sort_columns))}"]},
        )
    if cursor is not None and offset is not None:
        raise ValidationFailed(
            "Use either cursor or offset, not both.", errors={"cursor": ["conflicts with offset"]}
        )
    column = sort_columns[key]
    ordering = (column.desc(), id_column.desc()) if descending else (column.asc(), id_column.asc())

    total = None
    page_query = query
    if offset is not None:
        total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
        page_query = page_query.offset(offset)
    elif cursor:
        value, row_id = _decode_cursor(cursor, sort, _parser_for(column))
        position = tuple_(column, id_column)
        page_query = page_query.where(
            position < tuple_(value, row_id) if descending else position > tuple_(value, row_id)
        )
    rows: Sequence[Any] = session.scalars(page_query.order_by(*ordering).limit(limit + 1)).all()
    has_more = len(rows) > limit
    items = list(rows[:limit])

    next_cursor = None
    next_params: dict[str, Any] | None = None
    if has_more:
        last = items[-1]
        if offset is not None:
            next_params = {"offset": offset + limit, "limit": limit}
        else:
            next_cursor = _encode_cursor(sort, getattr(last, column.key), last.id)
            next_params = {"cursor": next_cursor, "limit": limit}
    return Page(items=items, next_cursor=next_cursor, total=total, next_params=next_params)


def _sort_choices(sort_columns: Mapping[str, Any]) -> list[str]:
    return [choice for key in sort_columns for choice in (key, f"-{key}")]
