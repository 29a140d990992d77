"""The one list helper of the HTTP layer: `?limit=` with either an opaque keyset `?cursor=` or
`?offset=` (`webapp.paging` runs the query).

Bodies are `{"items", "next_cursor", "total"}` (total in offset mode); `Link: rel="next"`.
"""

from __future__ import annotations

from urllib.parse import urlencode

from flask import request
from marshmallow import Schema, fields, validate

from webapp.paging import DEFAULT_LIMIT, MAX_LIMIT, Page


class ListArgs(Schema):
    """Query parameters shared by every list endpoint."""

    limit = fields.Integer(
        load_default=DEFAULT_LIMIT, validate=validate.Range(min=1, max=MAX_LIMIT)
    )
    cursor = fields.String(validate=validate.Length(max=512))
    offset = fields.Integer(validate=validate.Range(min=0, max=1_000_000))
    sort = fields.String(validate=validate.Length(max=64))


def page_schema(item_schema: type[Schema], name: str) -> type[Schema]:
    """A `{"items": [...], "next_cursor": ..., "total": ...}` envelope around `item_schema`."""
    return Schema.from_dict(
        {
            "items": fields.List(fields.Nested(item_schema), required=True),
            "next_cursor": fields.String(allow_none=True),
            "total": fields.Integer(allow_none=True),
        },
        name=name,
    )


def link_header(page: Page) -> dict[str, str]:
    """`Link: <this URL with the next page's cursor or offset>; rel="next"`, when there is one."""
    if page.next_params is None:
        return {}
    params = {k: v for k, v in request.args.to_dict().items() if k not in ("cursor", "offset")}
    params.update(page.next_params)
    return {"Link": f'<{request.base_url}?{urlencode(params)}>; rel="next"'}
