"""Retention: `flask webhooks purge` deletes domain events and delivery-log entries older than
WEBHOOK_RETENTION, never an event a delivery still waits for."""

from __future__ import annotations

import uuid
from datetime import timedelta, timezone

from flask_migrate import upgrade
from sqlalchemy import select, update

from tests.support.accounts import STRONG_PASSWORD, Account, log_in
from tests.support.webhook_admin import fan_out, rename, subscribe, webhook_rows
from webapp.context import SYSTEM
from webapp.db import utcnow
from webapp.events.models import DomainEvent
from webapp.extensions import db
from webapp.outbox.models import PENDING
from webapp.users import service as users
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

    # Not fanned out yet: the dispatcher has still to write their deliveries.
    with short.app_context():
        early = retention.purge(db.session)
        db.session.remove()
    assert (early.events, early.kept_pending) == (0, 4)

    fan_out(short)
    with short.app_context():
        purged = retention.purge(db.session)
        db.session.remove()

    assert (purged.events, purged.attempts, purged.kept_pending) == (4, 0, 0)
    assert event_ids(short) == set(all_events[4:])


def test_replay_and_purge_on_the_embedded_sqlite_database(make_app, tmp_path):
    """`make run`'s SQLite stores times as text without an offset: a window sent with another
    offset still selects the right events, and the purge's paging works there too."""
    lite = make_app(
        database_url=f"sqlite:///{tmp_path / 'gatehouse.db'}", webhook_allow_private=True
    )
    with lite.app_context():
        upgrade()
        user = users.create_user(
            db.session,
            SYSTEM,
            email="root@example.com",
            name="Root",
            password=STRONG_PASSWORD,
            role="admin",
        )
        root = Account(user.id, user.email, STRONG_PASSWORD, "admin")
        db.session.remove()
    log_in(lite.test_client(), root)
    for name in ("A", "B", "C"):
        rename(lite, root, root.id, name)
    base = utcnow() - timedelta(hours=3)
    with lite.app_context():
        renamed = list(
            db.session.scalars(
                select(DomainEvent)
                .where(DomainEvent.type == "user.updated")
                .order_by(DomainEvent.created_at)
            )
        )
        for hours, event in enumerate(renamed):
            event.created_at = base + timedelta(hours=hours)
        renamed_ids = [str(e.id) for e in renamed]
        db.session.commit()
        db.session.remove()
    hook = subscribe(lite, root, "http://127.0.0.1:9/hook", event_types=["user.updated"])
    plus_two = timezone(timedelta(hours=2))

    replayed = lite.test_client().post(
        f"/api/v1/webhooks/{hook['id']}/replay",
        json={"since": (base + timedelta(minutes=30)).astimezone(plus_two).isoformat()},
        headers=root.headers,
    )

    assert replayed.status_code == 202, replayed.json
    assert replayed.json["count"] == 2
    assert [row.payload["event_id"] for row in webhook_rows(lite)] == renamed_ids[1:]
    everything = event_ids(lite)
    age(lite, DomainEvent, everything, 31 * DAY)
    fan_out(lite)
    with lite.app_context():
        purged = retention.purge(db.session)
        db.session.remove()
    assert (purged.events, purged.kept_pending) == (len(everything) - 2, 2)
    assert event_ids(lite) == set(renamed_ids[1:])
    with lite.app_context():
        db.session.remove()
        db.engine.dispose()
