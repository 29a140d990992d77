"""Recording and reading audit events. `record` adds to the caller's transaction, so an event
exists exactly when the action it describes was committed."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select

from webapp.audit.models import AuditEvent
from webapp.context import Origin
from webapp.db import DbSession
from webapp.paging import Page, paginate

ACTIONS = (
    "auth.login_succeeded",
    "auth.login_failed",
    "auth.lockout",
    "auth.logout",
    "auth.refresh_reuse_detected",
    "auth.session_idle_timeout",
    "auth.email_verified",
    "auth.password_changed",
    "auth.password_reset_requested",
    "auth.password_reset",
    "auth.verification_resend_requested",
    "auth.reauthenticated",
    "session.revoked",
    "user.registered",
    "user.created",
    "user.updated",
    "user.role_changed",
    "user.deleted",
    "user.email_change_requested",
    "user.email_changed",
    "user.signup_expired",
    "api_key.created",
    "api_key.rotated",
    "api_key.revoked",
    "mfa.enrolment_started",
    "mfa.enabled",
    "mfa.disabled",
    "mfa.reset",
    "mfa.recovery_code_used",
    "mfa.recovery_codes_regenerated",
    "oauth_client.created",
    "oauth_client.updated",
    "oauth_client.secret_rotated",
    "oauth_client.deleted",
    "oauth.token_issued",
    "oauth.code_reused",
    "oauth.token_revoked",
    "oauth_consent.granted",
    "oauth_consent.revoked",
    "webhook.created",
    "webhook.updated",
    "webhook.deleted",
    "webhook.secret_rotated",
    "webhook.redelivered",
    "webhook.replayed",
    "webhook.disabled",
)


# Called with every recorded event, inside the same transaction (webapp.events derives the domain
# events from them): whatever reacts to an audited change commits or rolls back with it.
Listener = Callable[[DbSession, Origin, AuditEvent], None]
LISTENERS: list[Listener] = []


def add_listener(listener: Listener) -> None:
    if listener not in LISTENERS:
        LISTENERS.append(listener)


def record(
    db: DbSession,
    origin: Origin,
    action: str,
    *,
    target_type: str | None = None,
    target_id: uuid.UUID | None = None,
    **details: Any,
) -> AuditEvent:
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    event = AuditEvent(
        action=action,
        actor_id=origin.actor_id,
        api_key_id=origin.api_key_id,
        target_type=target_type,
        target_id=target_id,
        ip=origin.ip,
        user_agent=(origin.user_agent or "")[:512] or None,
        request_id=origin.request_id,
        details={k: v for k, v in details.items() if v is not None},
    )
    db.add(event)
    for listener in LISTENERS:
        listener(db, origin, event)
    return event


def list_events(
    db: DbSession,
    *,
    limit: int,
    cursor: str | None = None,
    offset: int | None = None,
    sort: str | None = None,
    action: str | None = None,
    actor_id: uuid.UUID | None = None,
    api_key_id: uuid.UUID | None = None,
    target_id: uuid.UUID | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> Page:
    query = select(AuditEvent)
    if action:
        query = query.where(AuditEvent.action == action)
    if actor_id:
        query = query.where(AuditEvent.actor_id == actor_id)
    if api_key_id:
        query = query.where(AuditEvent.api_key_id == api_key_id)
    if target_id:
        query = query.where(AuditEvent.target_id == target_id)
    if created_after:
        query = query.where(AuditEvent.created_at >= created_after)
    if created_before:
        query = query.where(AuditEvent.created_at < created_before)
    return paginate(
        db,
        query,
        id_column=AuditEvent.id,
        sort_columns={"created_at": AuditEvent.created_at},
        sort=sort,
        default_sort="-created_at",
        limit=limit,
        cursor=cursor,
        offset=offset,
    )
