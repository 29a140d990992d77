"""Retention: `flask webhooks purge` deletes domain events and delivery-log entries older than
WEBHOOK_RETENTION, never an event a delivery still waits for."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select, update

from tests.support.webhook_admin import rename, subscribe, webhook_rows
from webapp.db import utcnow
from webapp.events.models import DomainEvent
from webapp.extensions import db
from webapp.outbox.models import PENDING
from webapp.webhooks import retention
from webapp.webhooks.models import WebhookAttempt

DAY = timedelta(days=1)


def event_ids(application) -> set[str]:
    with application.app_context():
        ids = {str(i) for i in db.session.scalars(select(DomainEvent.id))}
        db.session.remove()
        return ids


def attempt_ids(application) -> set[str]:
    with application.app_context():
        ids = {str(i) for i in db.session.scalars(select(WebhookAttempt.id))}
        db.session.remove()
        return ids


def age(application, model, ids, by: timedelta) -> None:
    with application.app_context():
        db.session.execute(
            update(model)
            .where(model.id.in_([uuid.UUID(i) for i in ids]))
            .values(created_at=utcnow() - by)
        )
        db.session.commit()
        db.session.remove()


def test_purge_deletes_old_events_and_attempts_but_keeps_pending_and_recent_ones(
    hooks_app, admin, member, receiver, deliver_webhooks
):
    subscribe(hooks_app, admin, receiver.url, event_types=["user.updated"])
    rename(hooks_app, admin, member.id, "Delivered")
    deliver_webhooks(hooks_app)
    receiver.replies = [(503, b"busy", {})]
    rename(hooks_app, admin, member.id, "Waiting")  # fails once: its delivery is pending again
    deliver_webhooks(hooks_app)
    [waiting] = [row for row in webhook_rows(hooks_app) if row.status == PENDING]
    waiting_event = waiting.payload["event_id"]
    old_events, old_attempts = event_ids(hooks_app), attempt_ids(hooks_app)
    assert len(old_attempts) == 2
    age(hooks_app, DomainEvent, old_events, 31 * DAY)
    age(hooks_app, WebhookAttempt, old_attempts, 31 * DAY)
    rename(hooks_app, admin, member.id, "Recent")  # a recent event, delivered
    deliver_webhooks(hooks_app)
    recent_events = event_ids(hooks_app) - old_events
    recent_attempts = attempt_ids(hooks_app) - old_attempts
    assert recent_events
    assert recent_attempts

    result = hooks_app.test_cli_runner().invoke(args=["webhooks", "purge"])

    assert result.exit_code == 0, result.output
    assert f"deleted {len(old_events) - 1} domain event(s)" in result.output
    assert "and 2 delivery attempt(s)" in result.output
    assert "kept 1 still pending" in result.output
    assert event_ids(hooks_app) == recent_events | {waiting_event}
    assert attempt_ids(hooks_app) == recent_attempts


def test_purge_pages_through_many_events_and_honours_the_retention_setting(
    make_app, admin, member, monkeypatch
):
    short = make_app(webhook_retention=2 * 24 * 3600)
    for n in range(5):
        rename(short, admin, member.id, f"Name {n}")
    all_events = sorted(event_ids(short))
    age(short, DomainEvent, all_events[:4], 3 * DAY)  # beyond the two days
    age(short, DomainEvent, all_events[4:], 1 * DAY)  # within them
    monkeypatch.setattr(retention, "BATCH", 2)  # several pages and batches

    with short.app_context():
        purged = retention.purge(db.session)
        db.session.remove()

    assert (purged.events, purged.attempts, purged.kept_pending) == (4, 0, 0)
    assert event_ids(short) == set(all_events[4:])
