"""Schema building blocks shared by every resource."""

from __future__ import annotations

from marshmallow import Schema, fields, pre_load, validate


class StrictSchema(Schema):
    """Request bodies: unknown fields are rejected (422), strings are trimmed of surrounding
    whitespace except passwords (which are taken exactly as typed)."""

    class Meta:
        unknown = "raise"

    @pre_load
    def _strip(self, data: object, **_: object) -> object:
        if not isinstance(data, dict):
            return data
        return {
            k: v.strip() if isinstance(v, str) and "password" not in k else v
            for k, v in data.items()
        }


Email = fields.Email(required=True, validate=validate.Length(max=320))
Password = fields.String(required=True, validate=validate.Length(min=1, max=1024))
Name = fields.String(validate=validate.Length(min=1, max=200))
