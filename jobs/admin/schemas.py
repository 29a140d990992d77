"""Bodies of /api/v1/admin/jobs."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from jobs.queues import QUEUES
from webapp.http.pagination import ListArgs, page_schema
from webapp.outbox.service import TEMPLATES
from webapp.webhooks.service import TEMPLATE as WEBHOOK_TEMPLATE


class FailedJobOut(Schema):
    id = fields.UUID(required=True, metadata={"description": "Job id (= outbox message id)."})
    queue = fields.String(required=True)
    template = fields.String(required=True)
    recipient = fields.String(required=True)
    attempts = fields.Integer(required=True, metadata={"description": "Tries spent."})
    last_error = fields.String(
        allow_none=True, metadata={"description": "Why the last try failed."}
    )
    request_id = fields.String(allow_none=True)
    created_at = fields.DateTime(required=True)
    dead_at = fields.DateTime(allow_none=True)
    in_failed_registry = fields.Boolean(
        allow_none=True,
        metadata={
            "description": "Whether RQ's failed-job registry still holds the job "
            "(null: Redis unreachable). Replay works either way."
        },
    )


FailedJobPageOut = page_schema(FailedJobOut, "FailedJobPage")


class FailedJobListArgs(ListArgs):
    queue = fields.String(validate=validate.OneOf(QUEUES))
    template = fields.String(validate=validate.OneOf(sorted([*TEMPLATES, WEBHOOK_TEMPLATE])))


class RequeuedOut(Schema):
    id = fields.UUID(required=True)
    status = fields.String(
        required=True,
        metadata={"description": "enqueued, or pending when Redis is unreachable right now."},
    )


class RequeuedAllOut(Schema):
    requeued = fields.Integer(required=True)
