"""Webhook endpoints (administrators) and the fan-out of domain events to them.

An endpoint's secret is generated here, returned once (`Issued`), and stored encrypted under
the ENCRYPTION_KEYS keyring bound to the row id. A delivery is one outbox message per (event,
endpoint), template `webhook` (`queue_delivery`), written by the outbox dispatcher's fan-out
(webapp.webhooks.fanout) and moved to RQ like an email (docs/webhooks.md).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from observability.tracing import inject_context
from webapp.audit import service as audit
from webapp.config import current_settings
from webapp.context import Origin
from webapp.db import DbSession, new_id
from webapp.errors import NotFound, ValidationFailed
from webapp.events import audited
from webapp.events import service as events
from webapp.events.models import DomainEvent
from webapp.outbox.models import PENDING, OutboxMessage
from webapp.paging import Page, paginate
from webapp.security import encryption
from webapp.security.encryption import EncryptedColumn
from webapp.versions import etag_value, require_match
from webapp.webhooks import signing, ssrf
from webapp.webhooks.models import SECRET_COLUMN, WebhookAttempt, WebhookEndpoint

TEMPLATE = "webhook"  # outbox messages carrying a delivery
QUEUE = "default"


@dataclass(frozen=True)
class Issued:
    endpoint: WebhookEndpoint
    secret: str


def etag_of(endpoint: WebhookEndpoint) -> str:
    return etag_value(endpoint.id, endpoint.version)


def _check_url(url: str) -> str:
    url = url.strip()
    try:
        ssrf.check_url(url, allow_private=current_settings().webhook_allow_private)
    except ValueError as exc:
        raise ValidationFailed(f"The URL {exc}.", errors={"url": [str(exc)]}) from None
    return url


def _check_types(event_types: list[str]) -> list[str]:
    unknown = sorted(set(event_types) - set(events.SUBSCRIBABLE))
    if unknown:
        raise ValidationFailed(
            "Unknown event types.", errors={"event_types": [f"unknown: {t}" for t in unknown]}
        )
    return sorted(set(event_types))


def seal(endpoint_id: uuid.UUID, secret: str, column: EncryptedColumn = SECRET_COLUMN) -> str:
    """A signing secret encrypted for `column` of the endpoint's row."""
    return encryption.keyring().encrypt(
        secret, table=column.table, column=column.column, row_id=endpoint_id
    )


def unseal(endpoint_id: uuid.UUID, stored: str, column: EncryptedColumn = SECRET_COLUMN) -> str:
    """The signing secret stored in `column` of the endpoint's row."""
    return encryption.keyring().decrypt(
        stored, table=column.table, column=column.column, row_id=endpoint_id
    )


def secret_of(endpoint: WebhookEndpoint) -> str:
    return unseal(endpoint.id, endpoint.secret_encrypted)


def create_endpoint(
    db: DbSession,
    origin: Origin,
    *,
    url: str,
    event_types: list[str],
    enabled: bool = True,
    description: str = "",
) -> Issued:
    endpoint_id, secret = new_id(), signing.new_secret()
    endpoint = WebhookEndpoint(
        id=endpoint_id,
        url=_check_url(url),
        event_types=_check_types(event_types),
        enabled=enabled,
        description=description.strip(),
        secret_encrypted=seal(endpoint_id, secret),
        created_by=origin.actor_id,
    )
    db.add(endpoint)
    db.flush()
    audit.record(
        db,
        origin,
        "webhook.created",
        target_type="webhook",
        target_id=endpoint.id,
        url=endpoint.url,
        event_types=endpoint.event_types,
        enabled=enabled,
    )
    db.commit()
    return Issued(endpoint, secret)


def list_endpoints(
    db: DbSession,
    *,
    limit: int,
    cursor: str | None = None,
    offset: int | None = None,
    sort: str | None = None,
) -> Page:
    return paginate(
        db,
        select(WebhookEndpoint),
        id_column=WebhookEndpoint.id,
        sort_columns={"created_at": WebhookEndpoint.created_at},
        sort=sort,
        default_sort="-created_at",
        limit=limit,
        cursor=cursor,
        offset=offset,
    )


def get_endpoint(db: DbSession, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    endpoint = db.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        raise NotFound("No such webhook.")
    return endpoint


def locked(db: DbSession, endpoint_id: uuid.UUID, if_match: str | None) -> WebhookEndpoint:
    """The endpoint, locked for a change (404 unknown, 412 on an `If-Match` mismatch)."""
    endpoint = db.scalar(
        select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id).with_for_update()
    )
    if endpoint is None:
        raise NotFound("No such webhook.")
    require_match(if_match, etag_of(endpoint))
    return endpoint


def update_endpoint(
    db: DbSession,
    origin: Origin,
    endpoint_id: uuid.UUID,
    changes: dict[str, Any],
    *,
    if_match: str | None = None,
) -> WebhookEndpoint:
    endpoint = locked(db, endpoint_id, if_match)
    if "url" in changes:
        endpoint.url = _check_url(changes["url"])
    if "event_types" in changes:
        endpoint.event_types = _check_types(changes["event_types"])
    if "enabled" in changes:
        endpoint.enabled = changes["enabled"]
    if "description" in changes:
        endpoint.description = changes["description"].strip()
    if changes:
        audit.record(
            db,
            origin,
            "webhook.updated",
            target_type="webhook",
            target_id=endpoint.id,
            fields=sorted(changes),
            url=endpoint.url if "url" in changes else None,
        )
    db.commit()
    return endpoint


def delete_endpoint(
    db: DbSession, origin: Origin, endpoint_id: uuid.UUID, *, if_match: str | None = None
) -> None:
    """Its delivery log goes with it; deliveries still waiting are skipped when they come up."""
    endpoint = locked(db, endpoint_id, if_match)
    audit.record(
        db,
        origin,
        "webhook.deleted",
        target_type="webhook",
        target_id=endpoint.id,
        url=endpoint.url,
    )
    db.delete(endpoint)
    db.commit()


def list_attempts(
    db: DbSession,
    endpoint_id: uuid.UUID,
    *,
    limit: int,
    cursor: str | None = None,
    offset: int | None = None,
    sort: str | None = None,
) -> Page:
    get_endpoint(db, endpoint_id)
    return paginate(
        db,
        select(WebhookAttempt).where(WebhookAttempt.endpoint_id == endpoint_id),
        id_column=WebhookAttempt.id,
        sort_columns={"created_at": WebhookAttempt.created_at},
        sort=sort,
        default_sort="-created_at",
        limit=limit,
        cursor=cursor,
        offset=offset,
    )


# --- deliveries: one outbox message per (event, endpoint) ------------------------------------


def queue_delivery(
    db: DbSession, event: DomainEvent, endpoint: WebhookEndpoint, *, force: bool = False
) -> OutboxMessage:
    """Add the outbox message that delivers `event` to `endpoint` (the caller commits). It is
    dated with the event's time: per endpoint, deliveries go in the events' order
    (webapp.webhooks.lanes)."""
    payload: dict[str, Any] = {"event_id": str(event.id), "endpoint_id": str(endpoint.id)}
    if force:
        payload["force"] = True  # delivered even to a disabled endpoint
    message = OutboxMessage(
        id=new_id(),
        idempotency_key=f"{TEMPLATE}:{event.id}:{endpoint.id}",
        template=TEMPLATE,
        recipient=str(endpoint.id),
        payload=payload,
        queue=QUEUE,
        status=PENDING,
        trace_context=inject_context() or None,
        created_at=event.created_at,
    )
    db.add(message)
    return message


def send_test(db: DbSession, origin: Origin, endpoint_id: uuid.UUID) -> DomainEvent:
    """A `webhook.test` event for this endpoint alone (enabled or not: checking a disabled
    endpoint before re-enabling it is the point). Changes nothing, so it is not audited."""
    endpoint = get_endpoint(db, endpoint_id)
    if origin.actor_id is None:
        raise ValueError("a test event needs an acting user")
    event = events.emit(
        db,
        "webhook.test",
        subject=endpoint.id,
        user_id=origin.actor_id,
        data={"webhook_id": str(endpoint.id)},
        fan_out=False,
    )
    queue_delivery(db, event, endpoint, force=True)
    db.commit()
    return event


def install() -> None:
    """Wire the hook (the composition root calls it): audit → domain events. The outbox
    dispatcher fans the events out (webapp.webhooks.fanout)."""
    audit.add_listener(audited.on_audit)
