"""Sending events again: POST /webhooks/{id}/deliveries/{delivery_id}/redeliver (one delivery)
and POST /webhooks/{id}/replay (every matching event of a window), delivered for real to the
local receiver with the same `webhook-id` as the first time."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
import standardwebhooks
from sqlalchemy import select, update

from tests.support.problems import assert_problem
from tests.support.webhook_admin import HOOKS, api_key_of, rename, subscribe, webhook_rows
from webapp.audit.models import AuditEvent
from webapp.db import utcnow
from webapp.events.models import DomainEvent
from webapp.extensions import db
from webapp.outbox.models import DEAD, PENDING, SENT, OutboxMessage
from webapp.webhooks import redelivery


def post(application, account_headers, path: str, **kwargs):
    return application.test_client().post(f"{HOOKS}{path}", headers=account_headers, **kwargs)


def log_of(application, admin, hook_id: str) -> list[dict]:
    response = application.test_client().get(f"{HOOKS}{hook_id}/deliveries", headers=admin.headers)
    assert response.status_code == 200
    items: list[dict] = response.json["items"]
    return items


def audited(application, action: str) -> list[AuditEvent]:
    with application.app_context():
        rows = list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == action)))
        db.session.expunge_all()
        db.session.remove()
        return rows


def stamp(iso: datetime) -> str:
    return iso.isoformat()


# --- redelivery ---------------------------------------------------------------------------------


def test_redelivery_is_a_new_delivery_with_the_same_webhook_id(
    hooks_app, admin, member, receiver, deliver_webhooks
):
    hook = subscribe(hooks_app, admin, receiver.url, event_types=["user.updated"])
    rename(hooks_app, admin, member.id, "Again")
    deliver_webhooks(hooks_app)
    [first] = log_of(hooks_app, admin, hook["id"])

    response = post(
        hooks_app, admin.headers, f"{hook['id']}/deliveries/{first['message_id']}/redeliver"
    )

    assert response.status_code == 202, response.json
    queued = response.json
    assert queued["id"] != first["message_id"]
    assert queued["event_id"] == first["event_id"]
    assert queued["redelivery_of"] == first["message_id"]
    assert (queued["status"], queued["attempts"], queued["event_type"]) == (
        PENDING,
        0,
        "user.updated",
    )
    deliver_webhooks(hooks_app)
    assert len(receiver.requests) == 2
    (h1, b1), (h2, b2) = receiver.requests
    assert h1["webhook-id"] == h2["webhook-id"] == first["event_id"]
    assert b1 == b2
    assert standardwebhooks.Webhook(hook["secret"]).verify(b2, h2)["data"]["name"] == "Again"
    log = log_of(hooks_app, admin, hook["id"])
    assert {entry["message_id"] for entry in log} == {first["message_id"], queued["id"]}
    assert all(entry["success"] for entry in log)
    [event] = audited(hooks_app, "webhook.redelivered")
    assert event.details["event_id"] == first["event_id"]
    assert event.details["new_delivery_id"] == queued["id"]


def test_a_dead_delivery_is_redelivered_by_its_log_entry(
    hooks_app, admin, member, receiver, deliver_webhooks
):
    hook = subscribe(hooks_app, admin, receiver.url, event_types=["user.updated"])
    receiver.replies = [(500, b"down", {})]
    rename(hooks_app, admin, member.id, "Dead")
    deliver_webhooks(hooks_app)
    [failed] = log_of(hooks_app, admin, hook["id"])
    with hooks_app.app_context():  # its last try failed: a dead letter
        db.session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == uuid.UUID(failed["message_id"]))
            .values(status=DEAD, dead_at=utcnow())
        )
        db.session.commit()
        db.session.remove()

    response = post(hooks_app, admin.headers, f"{hook['id']}/deliveries/{failed['id']}/redeliver")
    deliver_webhooks(hooks_app)

    assert response.status_code == 202, response.json
    assert response.json["event_id"] == failed["event_id"]
    statuses = {str(row.id): row.status for row in webhook_rows(hooks_app)}
    assert statuses == {failed["message_id"]: DEAD, response.json["id"]: SENT}
    assert [h["webhook-id"] for h, _ in receiver.requests] == [failed["event_id"]] * 2


def test_a_delivery_of_another_endpoint_or_an_unknown_one_is_404(
    hooks_app, admin, member, receiver, deliver_webhooks
):
    mine = subscribe(hooks_app, admin, receiver.url, event_types=["user.updated"])
    other = subscribe(hooks_app, admin, receiver.url, event_types=["user.updated"])
    rename(hooks_app, admin, member.id, "Theirs")
    deliver_webhooks(hooks_app)
    [theirs] = log_of(hooks_app, admin, other["id"])
    before = len(webhook_rows(hooks_app))

    for delivery_id in (theirs["message_id"], theirs["id"], uuid.uuid4()):
        response = post(
            hooks_app, admin.headers, f"{mine['id']}/deliveries/{delivery_id}/redeliver"
        )
        assert_problem(response, 404, "not-found")
    unknown_hook = post(
        hooks_app, admin.headers, f"{uuid.uuid4()}/deliveries/{theirs['message_id']}/redeliver"
    )
    assert_problem(unknown_hook, 404, "not-found")
    assert len(webhook_rows(hooks_app)) == before


def test_a_delivery_whose_event_was_purged_is_404(
    hooks_app, admin, member, receiver, deliver_webhooks
):
    hook = subscribe(hooks_app, admin, receiver.url, event_types=["user.updated"])
    rename(hooks_app, admin, member.id, "Gone")
    deliver_webhooks(hooks_app)
    [entry] = log_of(hooks_app, admin, hook["id"])
    with hooks_app.app_context():
        db.session.query(DomainEvent).delete()  # what `flask webhooks purge` does, later
        db.session.commit()
        db.session.remove()

    response = post(
        hooks_app, admin.headers, f"{hook['id']}/deliveries/{entry['message_id']}/redeliver"
    )

    body = assert_problem(response, 404, "not-found")
    assert "no longer kept" in body["detail"]


def test_a_disabled_endpoint_refuses_redelivery_and_replay(
    hooks_app, admin, member, receiver, deliver_webhooks
):
    hook = subscribe(hooks_app, admin, receiver.url, event_types=["user.updated"])
    rename(hooks_app, admin, member.id, "Off")
    deliver_webhooks(hooks_app)
    [entry] = log_of(hooks_app, admin, hook["id"])
    patched = hooks_app.test_client().patch(
        f"{HOOKS}{hook['id']}", json={"enabled": False}, headers=admin.headers
    )
    assert patched.status_code == 200
    before = len(webhook_rows(hooks_app))

    redelivered = post(
        hooks_app, admin.headers, f"{hook['id']}/deliveries/{entry['message_id']}/redeliver"
    )
    since = stamp(utcnow() - timedelta(hours=1))
    replayed = post(hooks_app, admin.headers, f"{hook['id']}/replay", json={"since": since})

    assert_problem(redelivered, 409, "webhook-disabled")
    assert_problem(replayed, 409, "webhook-disabled")
    assert len(webhook_rows(hooks_app)) == before


# --- replay -------------------------------------------------------------------------------------


def renames_at(application, admin, member, base: datetime, names: list[str]) -> list[str]:
    """One `user.updated` event per name, written `base + i` minutes; returns their ids."""
    for name in names:
        rename(application, admin, member.id, name)
    with application.app_context():
        events = list(
            db.session.scalars(
                select(DomainEvent)
                .where(DomainEvent.type == "user.updated")
                .order_by(DomainEvent.created_at)
            )
        )
        assert [e.envelope["data"]["name"] for e in events] == names
        for minutes, event in enumerate(events):
            event.created_at = base + timedelta(minutes=minutes)
        ids = [str(e.id) for e in events]
        db.session.commit()
        db.session.remove()
    return ids


def move_event(application, event_type: str, at: datetime) -> str:
    with application.app_context():
        event = db.session.scalars(
            select(DomainEvent).where(DomainEvent.type == event_type)
        ).first()
        assert event is not None
        event.created_at = at
        event_id = str(event.id)
        db.session.commit()
        db.session.remove()
    return event_id


def test_replay_sends_exactly_the_matching_events_of_the_window_in_order(
    hooks_app, admin, member, receiver, deliver_webhooks
):
    base = utcnow() - timedelta(hours=2)
    ids = renames_at(hooks_app, admin, member, base, ["A", "B", "C", "D", "E"])
    # Another type inside the window, which the endpoint does not subscribe to.
    move_event(hooks_app, "session.created", base + timedelta(minutes=2, seconds=30))
    # Subscribed after the events: nothing was delivered to it the first time.
    hook = subscribe(hooks_app, admin, receiver.url, event_types=["user.updated"])
    assert webhook_rows(hooks_app) == []

    response = post(
        hooks_app,
        admin.headers,
        f"{hook['id']}/replay",
        json={  # any offset
            "since": stamp((base + timedelta(minutes=1)).astimezone(timezone(timedelta(hours=2)))),
            "until": stamp(base + timedelta(minutes=4)),
        },
    )
    deliver_webhooks(hooks_app)

    assert response.status_code == 202, response.json
    assert response.json["count"] == 3
    assert [h["webhook-id"] for h, _ in receiver.requests] == ids[1:4]
    hook_check = standardwebhooks.Webhook(hook["secret"])
    assert [hook_check.verify(b, h)["data"]["name"] for h, b in receiver.requests] == [
        "B",
        "C",
        "D",
    ]
    [event] = audited(hooks_app, "webhook.replayed")
    assert event.details["count"] == 3


def test_replay_until_now_by_default_and_of_all_types_for_an_all_types_endpoint(
    hooks_app, admin, member, receiver, deliver_webhooks
):
    base = utcnow() - timedelta(hours=2)
    ids = renames_at(hooks_app, admin, member, base, ["A", "B"])
    session_event = move_event(hooks_app, "session.created", base + timedelta(seconds=30))
    with hooks_app.app_context():  # the accounts' other events: before the window
        db.session.execute(
            update(DomainEvent)
            .where(DomainEvent.id.not_in([uuid.UUID(i) for i in [*ids, session_event]]))
            .values(created_at=base - timedelta(hours=1))
        )
        db.session.commit()
        db.session.remove()
    hook = subscribe(hooks_app, admin, receiver.url)  # every type

    response = post(hooks_app, admin.headers, f"{hook['id']}/replay", json={"since": stamp(base)})
    deliver_webhooks(hooks_app)

    assert response.status_code == 202, response.json
    assert response.json["count"] == 3
    assert [h["webhook-id"] for h, _ in receiver.requests] == [ids[0], session_event, ids[1]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"since": "FUTURE"}, "since"),
        ({"since": "LATER", "until": "EARLIER"}, "until"),
        ({"since": "EARLIER", "until": "EARLIER"}, "until"),
        ({"since": "2026-12-03T10:00:00"}, "since"),  # no offset: not RFC 3339
        ({"since": "yesterday"}, "since"),
        ({}, "since"),
        ({"since": "EARLIER", "types": ["user.updated"]}, "types"),
    ],
)
def test_bad_replay_windows_are_422_and_queue_nothing(
    hooks_app, admin, member, receiver, body, field
):
    renames_at(hooks_app, admin, member, utcnow() - timedelta(hours=2), ["A"])
    hook = subscribe(hooks_app, admin, receiver.url, event_types=["user.updated"])
    now = utcnow()
    times = {
        "FUTURE": now + timedelta(minutes=5),
        "LATER": now - timedelta(minutes=30),
        "EARLIER": now - timedelta(hours=3),
    }
    sent = {k: stamp(times[v]) if isinstance(v, str) and v in times else v for k, v in body.items()}

    response = post(hooks_app, admin.headers, f"{hook['id']}/replay", json=sent)

    problem = assert_problem(response, 422, "validation-failed")
    assert field in problem["errors"]
    assert webhook_rows(hooks_app) == []
    assert audited(hooks_app, "webhook.replayed") == []


def test_a_window_with_too_many_events_is_refused(hooks_app, admin, member, receiver, monkeypatch):
    base = utcnow() - timedelta(hours=2)
    renames_at(hooks_app, admin, member, base, ["A", "B", "C"])
    hook = subscribe(hooks_app, admin, receiver.url, event_types=["user.updated"])
    monkeypatch.setattr(redelivery, "REPLAY_MAX_EVENTS", 2)

    response = post(hooks_app, admin.headers, f"{hook['id']}/replay", json={"since": stamp(base)})
    fits = post(
        hooks_app,
        admin.headers,
        f"{hook['id']}/replay",
        json={"since": stamp(base), "until": stamp(base + timedelta(minutes=2))},
    )

    assert_problem(response, 422, "replay-window-too-large")
    assert fits.status_code == 202
    assert fits.json["count"] == 2
    assert len(webhook_rows(hooks_app)) == 2


def test_a_retried_replay_with_an_idempotency_key_queues_once(hooks_app, admin, member, receiver):
    base = utcnow() - timedelta(hours=2)
    renames_at(hooks_app, admin, member, base, ["A", "B"])
    hook = subscribe(hooks_app, admin, receiver.url, event_types=["user.updated"])
    headers = {**admin.headers, "Idempotency-Key": "replay-crm-1"}
    body = {"since": stamp(base)}

    first = post(hooks_app, headers, f"{hook['id']}/replay", json=body)
    again = post(hooks_app, headers, f"{hook['id']}/replay", json=body)

    assert first.status_code == again.status_code == 202
    assert again.json == first.json
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert len(webhook_rows(hooks_app)) == 2


@pytest.mark.parametrize("who", ["member", "api_key"])
def test_only_administrators_redeliver_and_replay(
    hooks_app, admin, member, receiver, deliver_webhooks, who
):
    hook = subscribe(hooks_app, admin, receiver.url, event_types=["user.updated"])
    rename(hooks_app, admin, member.id, "Mine")
    deliver_webhooks(hooks_app)
    [entry] = log_of(hooks_app, admin, hook["id"])
    headers = member.headers if who == "member" else {"X-API-Key": api_key_of(hooks_app, admin)}
    slug = "forbidden" if who == "member" else "api-key-not-allowed"
    before = len(webhook_rows(hooks_app))

    redelivered = post(
        hooks_app, headers, f"{hook['id']}/deliveries/{entry['message_id']}/redeliver"
    )
    since = stamp(utcnow() - timedelta(hours=1))
    replayed = post(hooks_app, headers, f"{hook['id']}/replay", json={"since": since})

    assert_problem(redelivered, 403, slug)
    assert_problem(replayed, 403, slug)
    assert len(webhook_rows(hooks_app)) == before
    assert audited(hooks_app, "webhook.replayed") == []
    assert audited(hooks_app, "webhook.redelivered") == []
