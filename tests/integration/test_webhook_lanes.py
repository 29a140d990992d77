"""Webhook delivery guarantees, with real HTTP receivers and the real job functions: the fan-out
runs in the dispatcher (never for a rolled-back change), each endpoint's deliveries go one at a
time in event order, a slow endpoint does not hold back another, a retry in backoff lets later
events go, and an endpoint failing for WEBHOOK_DISABLE_AFTER (or answering 410) is disabled with
an email to every active administrator, sent over SMTP."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import delete, func, select, update

from jobs import runtime
from jobs.tasks import deliver_webhook
from tests.support.jobs import FAST_JOBS
from tests.support.waiting import wait_until
from tests.support.webhook_admin import (
    HOOKS,
    fan_out,
    make_due,
    rename,
    subscribe_to_updates,
    webhook_rows,
)
from webapp.audit.models import AuditEvent
from webapp.db import utcnow
from webapp.events.models import DomainEvent
from webapp.extensions import db
from webapp.outbox.models import ENQUEUED, PENDING, SENT, OutboxMessage
from webapp.users.models import User
from webapp.webhooks.models import WebhookEndpoint

DISABLE_AFTER = 259200


@pytest.fixture
def hooks_app(hooks_app):
    runtime.bind_app(hooks_app)  # the job functions run in it
    return hooks_app


def names(receiver) -> list[str]:
    return [json.loads(body)["data"]["name"] for _, body in list(receiver.requests)]


# --- the fan-out ---------------------------------------------------------------------------------


def test_the_request_writes_the_event_and_the_dispatcher_its_deliveries(
    hooks_app, admin, member, receiver
):
    hook = subscribe_to_updates(hooks_app, admin, receiver.url)
    rename(hooks_app, admin, member.id, "One")
    rename(hooks_app, admin, member.id, "Two")

    assert webhook_rows(hooks_app) == []  # the requests wrote the events alone
    late = subscribe_to_updates(
        hooks_app, admin, receiver.url
    )  # after the events, before their fan-out
    assert fan_out(hooks_app) >= 2
    assert fan_out(hooks_app) == 0  # each event once

    written = webhook_rows(hooks_app)
    assert {row.recipient for row in written} == {hook["id"]}
    assert late["id"] not in {row.recipient for row in written}
    with hooks_app.app_context():
        updated = list(
            db.session.scalars(
                select(DomainEvent)
                .where(DomainEvent.type == "user.updated")
                .order_by(DomainEvent.created_at)
            )
        )
        assert all(event.fanned_out_at is not None for event in updated)
        db.session.remove()
    assert [row.payload["event_id"] for row in written] == [str(e.id) for e in updated]
    assert [row.created_at for row in written] == [e.created_at for e in updated]


def test_a_fan_out_pass_that_fails_writes_nothing_and_loses_no_event(
    hooks_app, admin, member, receiver
):
    from jobs import queues
    from jobs.dispatcher import dispatch
    from jobs.settings import jobs_settings_of
    from webapp.config import settings_of

    hook = subscribe_to_updates(hooks_app, admin, receiver.url)
    rename(hooks_app, admin, member.id, "One")
    rename(hooks_app, admin, member.id, "Two")
    with hooks_app.app_context():
        [_, second] = db.session.scalars(
            select(DomainEvent)
            .where(DomainEvent.type == "user.updated")
            .order_by(DomainEvent.created_at)
        )
        # A row in the way of the second event's delivery: the pass fails at its commit.
        blocker = OutboxMessage(
            idempotency_key=f"webhook:{second.id}:{hook['id']}",
            template="blocker",
            recipient="nobody",
            status=SENT,
        )
        db.session.add(blocker)
        db.session.commit()
        blocker_id = blocker.id
        connection = queues.connect(settings_of(hooks_app).redis_url)
        report = dispatch(db.session, connection, jobs_settings_of(hooks_app))
        assert report.error is None  # the rest of the pass went on
        assert (
            db.session.scalar(
                select(func.count())
                .select_from(DomainEvent)
                .where(DomainEvent.fanned_out_at.is_(None))
            )
            >= 2
        )
        db.session.remove()
    assert webhook_rows(hooks_app) == []  # not even the first event's: one transaction

    with hooks_app.app_context():
        db.session.execute(delete(OutboxMessage).where(OutboxMessage.id == blocker_id))
        db.session.commit()
        db.session.remove()
    fan_out(hooks_app)
    assert len(webhook_rows(hooks_app, hook["id"])) == 2


def test_a_rolled_back_change_is_never_fanned_out(hooks_app, admin, receiver):
    subscribe_to_updates(hooks_app, admin, receiver.url, event_types=[])
    response = hooks_app.test_client().patch(
        f"/api/v1/users/{admin.id}", json={"active": False}, headers=admin.headers
    )
    assert response.status_code == 409  # the last administrator stays

    fan_out(hooks_app)

    assert webhook_rows(hooks_app) == []
    with hooks_app.app_context():
        kinds = set(db.session.scalars(select(DomainEvent.type)))
        db.session.remove()
    assert not kinds & {"user.updated", "user.deactivated"}


# --- order and concurrency per endpoint ----------------------------------------------------------


def test_an_endpoint_gets_its_events_in_order_even_when_later_ones_are_due_first(
    hooks_app, admin, member, receiver, deliver_webhooks, work_jobs
):
    subscribe_to_updates(hooks_app, admin, receiver.url)
    for name in ("A", "B", "C", "D"):
        rename(hooks_app, admin, member.id, name)
    fan_out(hooks_app)
    # The later a message, the earlier it is due: without the lane, D would go first.
    with hooks_app.app_context():
        for position, row in enumerate(webhook_rows(hooks_app)):
            db.session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == row.id)
                .values(available_at=utcnow() - timedelta(seconds=10 + position))
            )
        db.session.commit()
        db.session.remove()

    deliver_webhooks(hooks_app)

    assert names(receiver) == ["A", "B", "C", "D"]
    assert [row.status for row in webhook_rows(hooks_app)] == [SENT] * 4


def test_the_dispatcher_enqueues_one_delivery_per_endpoint_at_a_time(
    hooks_app, admin, member, make_receiver
):
    from jobs import queues
    from jobs.dispatcher import dispatch
    from jobs.settings import jobs_settings_of
    from webapp.config import settings_of

    first, second = make_receiver(), make_receiver()
    one, two = (
        subscribe_to_updates(hooks_app, admin, first.url),
        subscribe_to_updates(hooks_app, admin, second.url),
    )
    for name in ("A", "B", "C"):
        rename(hooks_app, admin, member.id, name)

    with hooks_app.app_context():
        connection = queues.connect(settings_of(hooks_app).redis_url)
        dispatch(db.session, connection, jobs_settings_of(hooks_app))
        dispatch(db.session, connection, jobs_settings_of(hooks_app))  # nothing more to let go
        db.session.remove()

    for hook in (one, two):
        assert [row.status for row in webhook_rows(hooks_app, hook["id"])] == [
            ENQUEUED,
            PENDING,
            PENDING,
        ]


def test_a_failed_delivery_in_backoff_lets_later_events_go_but_not_past_the_limit(
    hooks_app, admin, member, receiver
):
    subscribe_to_updates(hooks_app, admin, receiver.url)
    receiver.replies = [(503, b"busy", {})]
    rename(hooks_app, admin, member.id, "One")
    rename(hooks_app, admin, member.id, "Two")
    fan_out(hooks_app)
    first, second = webhook_rows(hooks_app)

    assert deliver_webhook(str(first.id)) == "retry"
    receiver.hold, receiver.entered = threading.Event(), threading.Event()
    results: list[str] = []
    held = threading.Thread(target=lambda: results.append(deliver_webhook(str(second.id))))
    held.start()
    assert receiver.entered.wait(30), "the later event did not go while the first is in backoff"

    make_due(hooks_app, first.id)  # the first one's backoff is over: it is due again
    assert deliver_webhook(str(first.id)) == "busy"  # one delivery in flight per endpoint
    assert len(receiver.requests) == 2

    receiver.hold.set()
    held.join(30)
    assert results == ["sent"]
    make_due(hooks_app)
    assert deliver_webhook(str(first.id)) == "sent"
    assert names(receiver) == ["One", "Two", "One"]


def test_with_two_slots_two_deliveries_to_one_endpoint_run_at_once(
    make_app, admin, member, receiver
):
    application = make_app(webhook_allow_private=True, webhook_endpoint_concurrency=2)
    runtime.bind_app(application)
    subscribe_to_updates(application, admin, receiver.url)
    rename(application, admin, member.id, "One")
    rename(application, admin, member.id, "Two")
    rename(application, admin, member.id, "Three")
    fan_out(application)
    first, second, third = webhook_rows(application)
    receiver.hold = threading.Event()

    results: list[str] = []
    threads = [
        threading.Thread(target=lambda m=m: results.append(deliver_webhook(str(m.id))))
        for m in (first, second)
    ]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(receiver.requests) == 2, timeout=30)
    assert deliver_webhook(str(third.id)) == "busy"  # both slots taken

    receiver.hold.set()
    for thread in threads:
        thread.join(30)
    assert results == ["sent", "sent"]
    with application.app_context():
        db.session.remove()
        db.engine.dispose()


def test_a_slow_endpoint_does_not_hold_back_another(hooks_app, admin, member, make_receiver):
    slow, fast = make_receiver(), make_receiver()
    slow.hold = threading.Event()
    slow_hook = subscribe_to_updates(hooks_app, admin, slow.url)
    fast_hook = subscribe_to_updates(hooks_app, admin, fast.url)
    rename(hooks_app, admin, member.id, "One")
    rename(hooks_app, admin, member.id, "Two")
    fan_out(hooks_app)
    slow_first, slow_second = webhook_rows(hooks_app, slow_hook["id"])
    fast_first, fast_second = webhook_rows(hooks_app, fast_hook["id"])

    # One worker is stuck in the slow endpoint's first delivery...
    results: list[str] = []
    stuck = threading.Thread(target=lambda: results.append(deliver_webhook(str(slow_first.id))))
    stuck.start()
    assert slow.entered.wait(30)
    # ...another does not wait behind it: the slow endpoint's next event is put back at once,
    # and the fast endpoint gets both of its events while the slow one still holds its answer.
    assert deliver_webhook(str(slow_second.id)) == "waiting"
    assert deliver_webhook(str(fast_first.id)) == "sent"
    assert deliver_webhook(str(fast_second.id)) == "sent"
    assert names(fast) == ["One", "Two"]
    assert len(slow.requests) == 1
    assert stuck.is_alive()
    assert results == []

    slow.hold.set()
    stuck.join(30)
    assert results == ["sent"]
    make_due(hooks_app)
    assert deliver_webhook(str(slow_second.id)) == "sent"
    assert names(slow) == ["One", "Two"]


# --- failing endpoints ---------------------------------------------------------------------------


@pytest.fixture
def mail_app(make_app, smtp_sink):
    application = make_app(webhook_allow_private=True, smtp_url=smtp_sink.url, **FAST_JOBS)
    runtime.bind_app(application)
    yield application
    with application.app_context():
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()


def endpoint_row(application, endpoint_id: str) -> WebhookEndpoint:
    with application.app_context():
        row = db.session.get(WebhookEndpoint, uuid.UUID(endpoint_id))
        db.session.expunge_all()
        db.session.remove()
        return row


def test_a_success_ends_the_failing_period(hooks_app, admin, member, receiver, deliver_webhooks):
    hook = subscribe_to_updates(hooks_app, admin, receiver.url)
    receiver.replies = [(500, b"", {})]
    rename(hooks_app, admin, member.id, "One")
    deliver_webhooks(hooks_app)
    since = endpoint_row(hooks_app, hook["id"]).failing_since
    assert since is not None
    etag = hooks_app.test_client().get(f"{HOOKS}{hook['id']}", headers=admin.headers).headers

    make_due(hooks_app)
    deliver_webhooks(hooks_app)

    row = endpoint_row(hooks_app, hook["id"])
    assert (row.failing_since, row.enabled) == (None, True)
    again = hooks_app.test_client().get(f"{HOOKS}{hook['id']}", headers=admin.headers).headers
    assert again["ETag"] == etag["ETag"]  # delivery results do not change the resource's version


@pytest.mark.parametrize("reason", ["failing", "gone"])
def test_an_endpoint_disabled_automatically_is_audited_and_every_active_admin_emailed(
    reason, mail_app, admin, make_user, member, receiver, smtp_sink, deliver_webhooks, work_jobs
):
    other_admin = make_user("admin", login=False)
    retired = make_user("admin", login=False)
    with mail_app.app_context():
        db.session.execute(update(User).where(User.id == retired.id).values(active=False))
        db.session.commit()
        db.session.remove()
    hook = subscribe_to_updates(mail_app, admin, receiver.url + "?token=not-in-emails")
    rename(mail_app, admin, member.id, "One")
    if reason == "failing":
        receiver.replies = [(500, b"", {})] * 2
        deliver_webhooks(mail_app)
        assert endpoint_row(mail_app, hook["id"]).enabled is True  # failing, not for long yet
        # Failing for longer than WEBHOOK_DISABLE_AFTER: written in the row, not waited for.
        with mail_app.app_context():
            db.session.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.id == uuid.UUID(hook["id"]))
                .values(failing_since=utcnow() - timedelta(seconds=DISABLE_AFTER + 60))
            )
            db.session.commit()
            db.session.remove()
        make_due(mail_app)
    else:
        receiver.replies = [(410, b"gone", {})]
    deliver_webhooks(mail_app)

    assert endpoint_row(mail_app, hook["id"]).enabled is False
    [row] = webhook_rows(mail_app)
    expected = (
        "HTTP 500: endpoint disabled" if reason == "failing" else "HTTP 410: endpoint disabled"
    )
    assert (row.status, row.last_error) == (SENT, expected)
    with mail_app.app_context():
        [audited] = db.session.scalars(
            select(AuditEvent).where(AuditEvent.action == "webhook.disabled")
        )
        assert audited.details["reason"] == reason
        assert str(audited.target_id) == hook["id"]
        db.session.remove()

    work_jobs(mail_app)
    smtp_sink.wait_until(lambda sink: len(_disabled_notices(sink)) >= 2)
    notices = _disabled_notices(smtp_sink)
    assert sorted(r for m in notices for r in m.rcpt_tos) == sorted(
        [admin.email, other_admin.email]
    )
    text = notices[0].text
    assert hook["id"] in text
    assert receiver.url in text
    assert "not-in-emails" not in text
    assert ("410 Gone" in text) is (reason == "gone")
    assert ("Failing since" in text) is (reason == "failing")
    rename(mail_app, admin, member.id, "Two")
    fan_out(mail_app)
    assert len(webhook_rows(mail_app)) == 1  # nothing more for a disabled endpoint


def _disabled_notices(sink) -> list:
    return [
        m for m in list(sink.received) if m.message["X-Gatehouse-Template"] == "webhook_disabled"
    ]


def test_on_sqlite_the_dispatcher_fans_out_and_delivers_in_order(
    make_app, tmp_path, smtp_sink, receiver, work_jobs
):
    """The embedded default (`make run`): no advisory locks, the same fan-out and lanes."""
    from flask_migrate import upgrade

    from webapp.context import SYSTEM
    from webapp.users import service as users
    from webapp.webhooks import service as hooks

    application = make_app(
        database_url=f"sqlite:///{tmp_path / 'gatehouse.db'}",
        smtp_url=smtp_sink.url,
        webhook_allow_private=True,
        **FAST_JOBS,
    )
    runtime.bind_app(application)
    with application.app_context():
        upgrade()
        hooks.create_endpoint(db.session, SYSTEM, url=receiver.url, event_types=["user.created"])
        for name in ("Ada", "Grace", "Edsger"):
            users.create_user(
                db.session,
                SYSTEM,
                email=f"{name.lower()}@example.com",
                name=name,
                password="pale-Orbit-93-lantern-quiet",
            )
        db.session.remove()

    work_jobs(application)

    assert names(receiver) == ["Ada", "Grace", "Edsger"]
    assert [row.status for row in webhook_rows(application)] == [SENT] * 3
    with application.app_context():
        db.session.remove()
        db.engine.dispose()
