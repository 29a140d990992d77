"""Writing domain events, in the caller's transaction.

`emit` adds the event row before the caller commits: an event exists exactly when its change was
committed, and a rollback takes it away. Nothing else happens in the request: the outbox
dispatcher fans committed events out to the webhook endpoints later (webapp.webhooks.fanout).
Each event is a CloudEvents 1.0 JSON event whose `data` is described by `dataschema`
(`urn:gatehouse:events:<type>:v<version>`, see docs/webhooks.md); `data.user_id` is always
there, and no secret or password hash ever is.
"""

from __future__ import annotations

import uuid
from typing import Any

from webapp.config import current_settings
from webapp.db import DbSession, new_id, utcnow
from webapp.events.models import DomainEvent

SPECVERSION = "1.0"
# type → version of its `data` schema (bump it, and document the new one, on any breaking change).
TYPES: dict[str, int] = {
    "user.created": 1,
    "user.email_verified": 1,
    "user.updated": 1,
    "user.email_changed": 1,
    "user.role_changed": 1,
    "user.deactivated": 1,
    "user.deleted": 1,
    "user.password_changed": 1,
    "session.created": 1,
    "session.revoked": 1,
    "mfa.enabled": 1,
    "mfa.disabled": 1,
    "api_key.created": 1,
    "api_key.revoked": 1,
    # Sent to one endpoint on request (POST /webhooks/{id}/test), never fanned out.
    "webhook.test": 1,
}
SUBSCRIBABLE = tuple(sorted(t for t in TYPES if t != "webhook.test"))
# Never in an event, whatever a caller passes: the names of secrets.
_FORBIDDEN_KEYS = frozenset({"password", "password_hash", "secret", "token", "key", "key_hash"})


def dataschema(event_type: str) -> str:
    return f"urn:gatehouse:events:{event_type}:v{TYPES[event_type]}"


def emit(
    db: DbSession,
    event_type: str,
    *,
    subject: uuid.UUID,
    user_id: uuid.UUID,
    data: dict[str, Any] | None = None,
    fan_out: bool = True,
) -> DomainEvent:
    if event_type not in TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    leaked = _FORBIDDEN_KEYS.intersection(data or {})
    if leaked:
        raise ValueError(f"secret field(s) in event data: {sorted(leaked)}")
    event_id, now = new_id(), utcnow()
    body = {"user_id": str(user_id), **{k: v for k, v in (data or {}).items() if v is not None}}
    envelope = {
        "specversion": SPECVERSION,
        "id": str(event_id),
        "source": current_settings().public_base_url,
        "type": event_type,
        "subject": str(subject),
        "time": now.isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "dataschema": dataschema(event_type),
        "data": body,
    }
    event = DomainEvent(
        id=event_id,
        type=event_type,
        subject=str(subject),
        user_id=user_id,
        envelope=envelope,
        created_at=now,
        # fan_out=False: the caller queues the event's one delivery itself (a test event).
        fanned_out_at=None if fan_out else now,
    )
    db.add(event)
    return event
