"""Putting messages in the outbox, inside the caller's transaction.

The message body holds everything a worker needs to render and send it (links with their
tokens included): delivery never reads other tables. Its secret fields are stored encrypted
(webapp.outbox.sealing) and opened only by the worker, in memory. The idempotency key makes a
message unique, so a retried request cannot queue the same email twice.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from sqlalchemy import select

from observability.tracing import inject_context
from webapp.context import Origin
from webapp.db import DbSession, new_id
from webapp.outbox.models import PENDING, OutboxMessage
from webapp.outbox.sealing import scrubbed, seal

TEMPLATES = {
    "verify_email": "high",
    "password_reset": "high",
    "new_login": "default",
    "security_notice": "default",
    "welcome": "low",
    "email_change": "high",
    "webhook_disabled": "default",  # to every administrator (webapp.webhooks.health)
}


def enqueue(
    db: DbSession,
    origin: Origin,
    *,
    template: str,
    recipient: str,
    idempotency_key: str,
    payload: dict[str, Any],
    secret_fields: Collection[str] | None = None,
) -> OutboxMessage:
    """Queue an email. `secret_fields` names the payload fields stored encrypted (default:
    `token`, `link` and names ending in `_token` / `_link`)."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown email template {template!r}")
    message_id = new_id()  # known before the insert: the sealed fields are bound to it
    message = OutboxMessage(
        id=message_id,
        template=template,
        recipient=recipient,
        idempotency_key=idempotency_key,
        payload=seal(payload, message_id, secret_fields),
        queue=TEMPLATES[template],
        status=PENDING,
        request_id=origin.request_id,
        # So that the job's span continues the request's trace, whatever process sends it.
        trace_context=inject_context() or None,
    )
    db.add(message)
    return message


def exists(db: DbSession, idempotency_key: str) -> bool:
    """Whether a message with this key was written (the unique index answers it)."""
    found = db.scalar(
        select(OutboxMessage.id).where(OutboxMessage.idempotency_key == idempotency_key)
    )
    return found is not None


def pending(db: DbSession, limit: int = 100) -> list[OutboxMessage]:
    query = (
        select(OutboxMessage)
        .where(OutboxMessage.status == PENDING)
        .order_by(OutboxMessage.created_at)
        .limit(limit)
    )
    return list(db.scalars(query))


# --- dead letters: no secret kept, a fresh one at replay ----------------------------------------


class NotReplayable(Exception):
    """A dead letter whose email has no point any more (its account is gone, say)."""


Reissuer = Callable[[DbSession, OutboxMessage], dict[str, Any]]
# Templates whose secret is a one-time token their feature can mint again: their dead letters
# drop it (nobody then holds the token) and a replay asks the feature for a fresh payload.
REISSUERS: dict[str, Reissuer] = {}


def reissuer(template: str) -> Callable[[Reissuer], Reissuer]:
    """Register `fn(db, message) -> new plaintext payload` (or raise NotReplayable)."""

    def register(fn: Reissuer) -> Reissuer:
        REISSUERS[template] = fn
        return fn

    return register


def dead_letter_payload(template: str, payload: dict[str, Any]) -> dict[str, Any]:
    """What a message that failed its last try keeps: no token that a replay would re-issue."""
    return scrubbed(payload) if template in REISSUERS else payload


def prepare_replay(db: DbSession, message: OutboxMessage) -> None:
    """Before a dead letter goes out again: a fresh token for templates that re-issue theirs.
    Raises NotReplayable when there is nothing worth sending."""
    reissue = REISSUERS.get(message.template)
    if reissue is not None:
        message.payload = seal(reissue(db, message), message.id)
