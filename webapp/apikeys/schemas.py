"""Request and response bodies of /api/v1/api-keys."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from webapp.http.pagination import ListArgs, page_schema
from webapp.schemas import StrictSchema
from webapp.security.rbac import API_KEY_PERMISSIONS

SCOPES = sorted(API_KEY_PERMISSIONS)
STATUSES = ("active", "expired", "revoked")


class ApiKeyCreateIn(StrictSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    scopes = fields.List(
        fields.String(validate=validate.OneOf(SCOPES)),
        required=True,
        validate=validate.Length(min=1, max=len(SCOPES)),
        metadata={"description": "Permissions the key may use (each one a permission name)."},
    )
    expires_at = fields.AwareDateTime(
        load_default=None,
        allow_none=True,
        default_timezone=None,
        metadata={"description": "When the key stops working (default: never)."},
    )


class ApiKeyOut(Schema):
    id = fields.UUID(required=True)
    name = fields.String(required=True)
    prefix = fields.String(
        required=True, metadata={"description": "The key's visible start: `gh_live_<public id>`."}
    )
    scopes = fields.List(fields.String(), required=True)
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    created_at = fields.DateTime(required=True)
    expires_at = fields.DateTime(allow_none=True)
    rotated_at = fields.DateTime(allow_none=True)
    revoked_at = fields.DateTime(allow_none=True)
    previous_secret_expires_at = fields.DateTime(
        allow_none=True,
        metadata={"description": "After a rotation: until when the old secret still works."},
    )
    last_used_at = fields.DateTime(
        allow_none=True, metadata={"description": "Recorded in batches (about a minute)."}
    )
    last_used_ip = fields.String(allow_none=True)


class ApiKeySecretOut(ApiKeyOut):
    key = fields.String(
        required=True,
        metadata={"description": "The full key. Shown only in this response: store it now."},
    )


ApiKeyPageOut = page_schema(ApiKeyOut, "ApiKeyPage")


class ApiKeyListArgs(ListArgs):
    status = fields.String(validate=validate.OneOf(STATUSES))
