"""Bodies of /api/v1/audit-events."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from webapp.audit.service import ACTIONS
from webapp.http.pagination import ListArgs, page_schema


class AuditEventOut(Schema):
    id = fields.UUID(required=True)
    action = fields.String(required=True)
    actor_id = fields.UUID(allow_none=True)
    api_key_id = fields.UUID(
        allow_none=True, metadata={"description": "The API key the actor used, if any."}
    )
    target_type = fields.String(allow_none=True)
    target_id = fields.UUID(allow_none=True)
    ip = fields.String(allow_none=True)
    user_agent = fields.String(allow_none=True)
    request_id = fields.String(allow_none=True)
    details = fields.Dict(required=True)
    created_at = fields.DateTime(required=True)


AuditEventPageOut = page_schema(AuditEventOut, "AuditEventPage")


class AuditListArgs(ListArgs):
    action = fields.String(validate=validate.OneOf(ACTIONS))
    actor_id = fields.UUID()
    api_key_id = fields.UUID(metadata={"description": "events caused through this API key"})
    target_id = fields.UUID()
    created_after = fields.AwareDateTime(default_timezone=None)
    created_before = fields.AwareDateTime(default_timezone=None)
