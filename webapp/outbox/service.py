"""Putting messages in the outbox, inside the caller's transaction.

The message body holds everything a worker needs to render and send it (links with their
tokens included): delivery never reads other tables. The idempotency key makes a message unique,
so a retried request cannot queue the same email twice.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from observability.tracing import inject_context
from webapp.context import Origin
from webapp.db import DbSession
from webapp.outbox.models import PENDING, OutboxMessage

TEMPLATES = {
    "verify_email": "high",
    "password_reset": "high",
    "new_login": "default",
    "security_notice": "default",
    "welcome": "low",
}


def enqueue(
    db: DbSession,
    origin: Origin,
    *,
    template: str,
    recipient: str,
    idempotency_key: str,
    payload: dict[str, Any],
) -> OutboxMessage:
    if template not in TEMPLATES:
        raise ValueError(f"unknown email template {template!r}")
    message = OutboxMessage(
        template=template,
        recipient=recipient,
        idempotency_key=idempotency_key,
        payload=payload,
        queue=TEMPLATES[template],
        status=PENDING,
        request_id=origin.request_id,
        # So that the job's span continues the request's trace, whatever process sends it.
        trace_context=inject_context() or None,
    )
    db.add(message)
    return message


def pending(db: DbSession, limit: int = 100) -> list[OutboxMessage]:
    query = (
        select(OutboxMessage)
        .where(OutboxMessage.status == PENDING)
        .order_by(OutboxMessage.created_at)
        .limit(limit)
    )
    return list(db.scalars(query))
