"""/api/v1/webhooks (administrators): endpoints subscribed to the domain events, and their
delivery log, secret rotation, redelivery and replay. Thin views — parse, call the service,
serialize. Human-only: `webhooks:manage` is no API key scope (a key could otherwise point every
user event at itself); rotating a secret also needs a recent authentication, as minting any
credential does."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Response, url_for
from flask.views import MethodView
from flask_smorest import Blueprint

from webapp.extensions import db
from webapp.http.access import requires, requires_recent_auth
from webapp.http.etag import if_match_header, not_modified
from webapp.http.idempotency import idempotent
from webapp.http.origin import request_origin
from webapp.http.pagination import link_header
from webapp.webhooks import redelivery, rotation, service
from webapp.webhooks.models import WebhookEndpoint
from webapp.webhooks.schemas import (
    WebhookAttemptPageOut,
    WebhookCreateIn,
    WebhookDeliveryOut,
    WebhookListArgs,
    WebhookOut,
    WebhookPageOut,
    WebhookPatchIn,
    WebhookReplayIn,
    WebhookReplayOut,
    WebhookSecretOut,
    WebhookTestOut,
)

PERMISSION = "webhooks:manage"

blp = Blueprint(
    "webhooks",
    __name__,
    url_prefix="/api/v1/webhooks",
    description="Webhooks: signed deliveries of the domain events (docs/webhooks.md).",
)


def _out(endpoint: WebhookEndpoint, secret: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": endpoint.id,
        "url": endpoint.url,
        "event_types": endpoint.event_types,
        "enabled": endpoint.enabled,
        "description": endpoint.description,
        "created_by": endpoint.created_by,
        "created_at": endpoint.created_at,
        "updated_at": endpoint.updated_at,
        "secret_rotated_at": endpoint.secret_rotated_at,
        "previous_secret_expires_at": rotation.previous_secret_valid_until(endpoint),
    }
    if secret is not None:
        body["secret"] = secret
    return body


@blp.route("/")
class Webhooks(MethodView):
    @requires(PERMISSION)
    @blp.arguments(WebhookListArgs, location="query", as_kwargs=True)
    @blp.response(200, WebhookPageOut)
    def get(self, **args: Any) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Webhook endpoints (never their secrets), newest first."""
        page = service.list_endpoints(db.session, **args)
        body = page.body()
        body["items"] = [_out(endpoint) for endpoint in body["items"]]
        return body, 200, link_header(page)

    @requires(PERMISSION)
    @requires_recent_auth
    @blp.arguments(WebhookCreateIn)
    @blp.response(201, WebhookSecretOut)
    def post(self, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Subscribe an endpoint; the response holds its signing secret, shown this once. Needs a
        recent authentication: a new subscriber receives every user's changes."""
        issued = service.create_endpoint(db.session, request_origin(), **body)
        headers = {
            "Location": url_for("webhooks.WebhookById", endpoint_id=issued.endpoint.id),
            "ETag": service.etag_of(issued.endpoint),
        }
        return _out(issued.endpoint, issued.secret), 201, headers


@blp.route("/<uuid:endpoint_id>")
class WebhookById(MethodView):
    @requires(PERMISSION)
    @blp.response(200, WebhookOut)
    def get(self, endpoint_id: uuid.UUID) -> Any:
        """One endpoint (never its secret), with an ETag."""
        endpoint = service.get_endpoint(db.session, endpoint_id)
        etag = service.etag_of(endpoint)
        if not_modified(etag):
            return Response(status=304, headers={"ETag": etag})
        return _out(endpoint), 200, {"ETag": etag}

    @requires(PERMISSION)
    @blp.arguments(WebhookPatchIn)
    @blp.response(200, WebhookOut)
    def patch(self, body: dict[str, Any], endpoint_id: uuid.UUID) -> Any:
        """Change the URL, event types, `enabled` or description. Honours If-Match."""
        endpoint = service.update_endpoint(
            db.session, request_origin(), endpoint_id, body, if_match=if_match_header()
        )
        return _out(endpoint), 200, {"ETag": service.etag_of(endpoint)}

    @requires(PERMISSION)
    @blp.response(204)
    def delete(self, endpoint_id: uuid.UUID) -> None:
        """Unsubscribe: no more deliveries (waiting ones are skipped). Honours If-Match."""
        service.delete_endpoint(
            db.session, request_origin(), endpoint_id, if_match=if_match_header()
        )


@blp.route("/<uuid:endpoint_id>/test")
class WebhookTest(MethodView):
    @requires(PERMISSION)
    @blp.response(202, WebhookTestOut)
    def post(self, endpoint_id: uuid.UUID) -> dict[str, Any]:
        """Queue a `webhook.test` event for this endpoint alone (disabled or not); its result
        appears in the delivery log."""
        event = service.send_test(db.session, request_origin(), endpoint_id)
        return {"event_id": event.id}


@blp.route("/<uuid:endpoint_id>/deliveries")
class WebhookDeliveries(MethodView):
    @requires(PERMISSION)
    @blp.arguments(WebhookListArgs, location="query", as_kwargs=True)
    @blp.response(200, WebhookAttemptPageOut)
    def get(
        self, endpoint_id: uuid.UUID, **args: Any
    ) -> tuple[dict[str, Any], int, dict[str, str]]:
        """The delivery log: one entry per attempt, newest first."""
        page = service.list_attempts(db.session, endpoint_id, **args)
        return page.body(), 200, link_header(page)


@blp.route("/<uuid:endpoint_id>/rotate-secret")
class WebhookSecretRotation(MethodView):
    @requires(PERMISSION)
    @requires_recent_auth
    @blp.response(200, WebhookSecretOut)
    def post(self, endpoint_id: uuid.UUID) -> Any:
        """A new signing secret, shown this once; the previous one keeps signing beside it for
        `WEBHOOK_SECRET_OVERLAP` seconds (see `previous_secret_expires_at`). Honours If-Match.
        Needs a recent authentication."""
        issued = rotation.rotate_secret(
            db.session, request_origin(), endpoint_id, if_match=if_match_header()
        )
        return _out(issued.endpoint, issued.secret), 200, {"ETag": service.etag_of(issued.endpoint)}


@blp.route("/<uuid:endpoint_id>/deliveries/<uuid:delivery_id>/redeliver")
class WebhookRedelivery(MethodView):
    @requires(PERMISSION)
    @idempotent
    @blp.response(202, WebhookDeliveryOut)
    def post(self, endpoint_id: uuid.UUID, delivery_id: uuid.UUID) -> dict[str, Any]:
        """Send that delivery's event to this endpoint again: a new delivery with the same
        `webhook-id` (sent, dead or pending alike). `delivery_id` is a delivery log entry's
        `message_id` (or its `id`). Honours Idempotency-Key."""
        queued = redelivery.redeliver(db.session, request_origin(), endpoint_id, delivery_id)
        message = queued.message
        return {
            "id": message.id,
            "event_id": queued.event.id,
            "event_type": queued.event.type,
            "status": message.status,
            "attempts": message.attempts,
            "redelivery_of": queued.redelivery_of,
            "created_at": message.created_at,
        }


@blp.route("/<uuid:endpoint_id>/replay")
class WebhookReplay(MethodView):
    @requires(PERMISSION)
    @idempotent
    @blp.arguments(WebhookReplayIn)
    @blp.response(202, WebhookReplayOut)
    def post(self, body: dict[str, Any], endpoint_id: uuid.UUID) -> dict[str, Any]:
        """Queue again, in event order, every kept event of `[since, until)` this endpoint
        subscribes to (same `webhook-id`s). At most 10,000 events (else 422
        `replay-window-too-large`). Honours Idempotency-Key."""
        replayed = redelivery.replay(db.session, request_origin(), endpoint_id, **body)
        return {"count": replayed.count, "since": replayed.since, "until": replayed.until}
