"""Failing endpoints: `failing_since`, and disabling an endpoint automatically.

Every delivery attempt updates its endpoint's `failing_since` in the attempt's transaction: set
at the first failure after a success (or ever), cleared by a success. An endpoint whose
deliveries have failed without a success for `WEBHOOK_DISABLE_AFTER` seconds is disabled by the
failed attempt that finds it so; a 410 Gone disables it at once. Either way the change is
audited (`webhook.disabled`, with the reason) and every active administrator gets an email
(template `webhook_disabled`, through the outbox like every email), in the same transaction.

These updates bypass the ORM's version check on purpose: an administrator's edit in between must
not make the attempt's record fail. `failing_since` is not part of the versioned representation;
disabling bumps `version` (the representation changed) and applies only to an enabled endpoint,
so a disable that raced another is audited and mailed once.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import select, update

from webapp.audit import service as audit
from webapp.context import Origin
from webapp.db import DbSession, new_id
from webapp.outbox import service as outbox
from webapp.security import rbac
from webapp.users.models import User
from webapp.webhooks.models import WebhookEndpoint

ORIGIN = Origin(user_agent="gatehouse-webhooks")
TEMPLATE = "webhook_disabled"
GONE, FAILING = "gone", "failing"

_SUMMARIES = {
    GONE: "Its receiver answered 410 Gone: it says the endpoint is no more.",
    FAILING: "Its deliveries have failed without a single success for longer than the service "
    "allows (WEBHOOK_DISABLE_AFTER).",
}


def record_attempt(
    db: DbSession, endpoint: WebhookEndpoint, *, success: bool, now: datetime
) -> datetime | None:
    """Note an attempt's result on its endpoint (the caller commits); returns `failing_since`
    after it."""
    if success:
        if endpoint.failing_since is not None:
            _set(db, endpoint.id, WebhookEndpoint.failing_since.is_not(None), failing_since=None)
        return None
    if endpoint.failing_since is None:
        _set(db, endpoint.id, WebhookEndpoint.failing_since.is_(None), failing_since=now)
        return now
    return endpoint.failing_since


def _set(db: DbSession, endpoint_id: uuid.UUID, condition: Any, **values: Any) -> None:
    db.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id, condition)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def disable(
    db: DbSession,
    endpoint: WebhookEndpoint,
    reason: str,
    *,
    now: datetime,
    failing_since: datetime | None = None,
    last_error: str | None = None,
) -> bool:
    """Disable an enabled endpoint, audit it and mail the administrators (the caller commits).
    False if it was not enabled any more (nothing done)."""
    result = db.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint.id, WebhookEndpoint.enabled.is_(True))
        .values(enabled=False, version=WebhookEndpoint.version + 1, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        return False
    audit.record(
        db,
        ORIGIN,
        "webhook.disabled",
        target_type="webhook",
        target_id=endpoint.id,
        reason=reason,
        failing_since=failing_since.isoformat() if failing_since else None,
        last_error=last_error,
    )
    _notify_admins(db, endpoint, reason, now, failing_since, last_error)
    return True


def shown_url(url: str) -> str:
    """The URL as an email shows it: without its query and fragment (they may hold a token)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _notify_admins(
    db: DbSession,
    endpoint: WebhookEndpoint,
    reason: str,
    now: datetime,
    failing_since: datetime | None,
    last_error: str | None,
) -> None:
    admins = db.scalars(
        select(User).where(User.role == rbac.ADMIN, User.active.is_(True)).order_by(User.id)
    )
    for admin in admins:
        outbox.enqueue(
            db,
            ORIGIN,
            template=TEMPLATE,
            recipient=admin.email,
            idempotency_key=f"{TEMPLATE}:{new_id()}",
            payload={
                "name": admin.name,
                "webhook_id": str(endpoint.id),
                "url": shown_url(endpoint.url),
                "description": endpoint.description,
                "reason": reason,
                "summary": _SUMMARIES[reason],
                "at": now.isoformat(),
                "failing_since": failing_since.isoformat() if failing_since else None,
                "last_error": last_error,
            },
            secret_fields=(),
        )
