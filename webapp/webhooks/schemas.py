"""Request and response bodies of /api/v1/webhooks."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from webapp.events.service import SUBSCRIBABLE
from webapp.http.pagination import ListArgs, page_schema
from webapp.schemas import StrictSchema

EVENT_TYPES = list(SUBSCRIBABLE)


class _EventTypes(fields.List[str]):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(
            fields.String(validate=validate.OneOf(EVENT_TYPES)),
            validate=validate.Length(max=len(EVENT_TYPES)),
            metadata={"description": "Event types delivered (empty: all of them)."},
            **kwargs,  # type: ignore[arg-type]
        )


class WebhookCreateIn(StrictSchema):
    url = fields.String(
        required=True,
        validate=validate.Length(min=1, max=2048),
        metadata={
            "description": "https:// (http:// and private addresses only when "
            "WEBHOOK_ALLOW_PRIVATE=true)."
        },
    )
    event_types = _EventTypes(load_default=list)
    enabled = fields.Boolean(load_default=True)
    description = fields.String(load_default="", validate=validate.Length(max=500))


class WebhookPatchIn(StrictSchema):
    url = fields.String(validate=validate.Length(min=1, max=2048))
    event_types = _EventTypes()
    enabled = fields.Boolean()
    description = fields.String(validate=validate.Length(max=500))


class WebhookOut(Schema):
    id = fields.UUID(required=True)
    url = fields.String(required=True)
    event_types = fields.List(fields.String(), required=True)
    enabled = fields.Boolean(required=True)
    description = fields.String(required=True)
    created_by = fields.UUID(allow_none=True)
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)
    secret_rotated_at = fields.DateTime(
        allow_none=True, metadata={"description": "When the secret was last rotated."}
    )
    previous_secret_expires_at = fields.DateTime(
        allow_none=True,
        metadata={
            "description": "Until when the previous secret still signs beside the current one "
            "(WEBHOOK_SECRET_OVERLAP after a rotation); null when it does not."
        },
    )


class WebhookSecretOut(WebhookOut):
    secret = fields.String(
        required=True,
        metadata={
            "description": "The signing secret (`whsec_…`, Standard Webhooks). Shown only "
            "in this response: store it now."
        },
    )


class WebhookTestOut(Schema):
    event_id = fields.UUID(
        required=True, metadata={"description": "The `webhook.test` event queued (`webhook-id`)."}
    )


class WebhookAttemptOut(Schema):
    id = fields.UUID(required=True)
    message_id = fields.UUID(required=True)
    event_id = fields.UUID(required=True, metadata={"description": "Also the `webhook-id`."})
    event_type = fields.String(required=True)
    attempt = fields.Integer(required=True)
    success = fields.Boolean(required=True)
    status_code = fields.Integer(allow_none=True)
    error = fields.String(allow_none=True)
    latency_ms = fields.Integer(required=True)
    response_excerpt = fields.String(
        allow_none=True, metadata={"description": "The first KiB of the response body."}
    )
    created_at = fields.DateTime(required=True)


class WebhookDeliveryOut(Schema):
    """A delivery: one (event, endpoint) message and its state."""

    id = fields.UUID(required=True, metadata={"description": "The delivery (its `message_id`)."})
    event_id = fields.UUID(
        required=True, metadata={"description": "The event, also the `webhook-id` header."}
    )
    event_type = fields.String(required=True)
    status = fields.String(
        required=True, metadata={"description": "`pending`, `enqueued`, `sent` or `dead`."}
    )
    attempts = fields.Integer(required=True)
    redelivery_of = fields.UUID(
        allow_none=True, metadata={"description": "The delivery this one sends again."}
    )
    created_at = fields.DateTime(required=True)


class WebhookReplayIn(StrictSchema):
    since = fields.AwareDateTime(
        required=True,
        format="iso",
        metadata={"description": "RFC 3339 date-time with an offset: events at or after it."},
    )
    until = fields.AwareDateTime(
        format="iso",
        load_default=None,
        metadata={"description": "RFC 3339 date-time with an offset: events before it (now)."},
    )


class WebhookReplayOut(Schema):
    count = fields.Integer(required=True, metadata={"description": "Deliveries queued."})
    since = fields.DateTime(required=True)
    until = fields.DateTime(required=True)


WebhookPageOut = page_schema(WebhookOut, "WebhookPage")
WebhookAttemptPageOut = page_schema(WebhookAttemptOut, "WebhookAttemptPage")


class WebhookListArgs(ListArgs):
    pass
