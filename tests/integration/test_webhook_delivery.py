"""Webhook delivery end to end: an audited change → a domain event → one outbox message per
subscribed endpoint → the dispatcher → an RQ job → a signed POST to a real local HTTP receiver,
verified with the `standardwebhooks` library; the delivery log; retries; the SSRF guard."""

from __future__ import annotations

import json

import standardwebhooks
from sqlalchemy import select

from tests.support.webhook_admin import HOOKS, fan_out, make_due, rename, subscribe, webhook_rows
from webapp.db import utcnow
from webapp.events.models import DomainEvent
from webapp.extensions import db
from webapp.outbox.models import DEAD, PENDING, SENT
from webapp.webhooks.delivery import RETRY_SCHEDULE


def test_a_change_is_delivered_signed_and_logged(
    hooks_app, admin, member, receiver, deliver_webhooks
):
    hook = subscribe(hooks_app, admin, receiver.url, event_types=["user.updated"])

    rename(hooks_app, admin, member.id, "Delivered")
    deliver_webhooks(hooks_app)

    [(headers, body)] = receiver.requests
    payload = standardwebhooks.Webhook(hook["secret"]).verify(body, headers)
    assert payload["type"] == "user.updated"
    assert payload["data"]["name"] == "Delivered"
    assert headers["webhook-id"] == payload["id"]
    assert headers["content-type"] == "application/json"
    with hooks_app.app_context():
        event = db.session.get(DomainEvent, payload["id"])
        assert event.envelope == json.loads(body)
        db.session.remove()
    [row] = webhook_rows(hooks_app)
    assert (row.status, row.attempts) == (SENT, 1)
    log = hooks_app.test_client().get(f"{HOOKS}{hook['id']}/deliveries", headers=admin.headers)
    assert log.status_code == 200
    [attempt] = log.json["items"]
    assert attempt["success"] is True
    assert (attempt["status_code"], attempt["response_excerpt"]) == (200, "ok")
    assert attempt["event_id"] == payload["id"]
    assert attempt["latency_ms"] >= 0


def test_one_delivery_per_subscribed_enabled_endpoint(
    hooks_app, admin, member, receiver, deliver_webhooks
):
    subscribe(hooks_app, admin, receiver.url)  # all types
    subscribe(hooks_app, admin, receiver.url, event_types=["user.deleted"])
    subscribe(hooks_app, admin, receiver.url, enabled=False)

    rename(hooks_app, admin, member.id, "Once")
    deliver_webhooks(hooks_app)

    assert [json.loads(body)["type"] for _, body in receiver.requests] == ["user.updated"]


def test_a_failed_attempt_is_logged_and_retried_with_the_same_webhook_id(
    hooks_app, admin, member, receiver, deliver_webhooks
):
    hook = subscribe(hooks_app, admin, receiver.url)
    receiver.replies = [(503, b"busy" * 1000, {})]

    rename(hooks_app, admin, member.id, "Retried")
    before = utcnow()
    deliver_webhooks(hooks_app)

    [row] = webhook_rows(hooks_app)
    assert (row.status, row.attempts, row.last_error) == (PENDING, 1, "HTTP 503")
    wait = (row.available_at - before).total_seconds()
    assert RETRY_SCHEDULE[0] - 1 < wait < RETRY_SCHEDULE[0] + 5

    make_due(hooks_app)
    deliver_webhooks(hooks_app)

    first, second = receiver.requests
    assert first[0]["webhook-id"] == second[0]["webhook-id"]
    assert first[1] == second[1]
    standardwebhooks.Webhook(hook["secret"]).verify(second[1], second[0])
    log = hooks_app.test_client().get(f"{HOOKS}{hook['id']}/deliveries", headers=admin.headers)
    failed = log.json["items"][-1]
    assert (failed["success"], failed["status_code"], failed["attempt"]) == (False, 503, 1)
    assert len(failed["response_excerpt"]) == 1024
    assert [row.status for row in webhook_rows(hooks_app)] == [SENT]


def test_the_last_try_makes_a_dead_letter(hooks_app, admin, member, receiver, deliver_webhooks):
    subscribe(hooks_app, admin, receiver.url)
    receiver.replies = [(500, b"", {})] * (len(RETRY_SCHEDULE) + 1)
    rename(hooks_app, admin, member.id, "Dead")

    for _ in range(len(RETRY_SCHEDULE) + 1):
        make_due(hooks_app)
        deliver_webhooks(hooks_app)

    [row] = webhook_rows(hooks_app)
    assert (row.status, row.attempts) == (DEAD, len(RETRY_SCHEDULE) + 1)
    assert len(receiver.requests) == len(RETRY_SCHEDULE) + 1
    # A dead letter like an email's: listed, and replayed with the same webhook-id.
    api = hooks_app.test_client()
    failed = api.get("/api/v1/admin/jobs/failed?template=webhook", headers=admin.headers)
    assert [item["id"] for item in failed.json["items"]] == [str(row.id)]
    requeued = api.post(f"/api/v1/admin/jobs/failed/{row.id}/requeue", headers=admin.headers)
    assert requeued.status_code == 202, requeued.json
    deliver_webhooks(hooks_app)
    assert [r.status for r in webhook_rows(hooks_app)] == [SENT]
    ids = {headers["webhook-id"] for headers, _ in receiver.requests}
    assert len(receiver.requests) == len(RETRY_SCHEDULE) + 2
    assert len(ids) == 1


def test_redirects_are_not_followed(hooks_app, admin, member, receiver, deliver_webhooks):
    subscribe(hooks_app, admin, receiver.url)
    receiver.replies = [(302, b"", {"Location": "http://169.254.169.254/latest/meta-data/"})]

    rename(hooks_app, admin, member.id, "Redirected")
    deliver_webhooks(hooks_app)

    assert len(receiver.requests) == 1
    [row] = webhook_rows(hooks_app)
    assert (row.status, row.last_error) == (PENDING, "HTTP 302")


def test_a_private_target_is_refused_at_delivery_when_not_allowed(
    hooks_app, app, admin, member, receiver, deliver_webhooks
):
    # Saved while private targets were allowed; delivered by an app with the guard on.
    hook = subscribe(hooks_app, admin, receiver.url)

    rename(app, admin, member.id, "Guarded")
    deliver_webhooks(app)

    assert receiver.requests == []
    [row] = webhook_rows(app)
    assert row.status == PENDING
    assert row.last_error.startswith("refused: host resolves to a loopback address")
    log = app.test_client().get(f"{HOOKS}{hook['id']}/deliveries", headers=admin.headers)
    [attempt] = log.json["items"]
    assert (attempt["success"], attempt["status_code"]) == (False, None)


def test_a_rolled_back_change_queues_no_delivery(hooks_app, admin, receiver):
    subscribe(hooks_app, admin, receiver.url)
    response = hooks_app.test_client().patch(
        f"/api/v1/users/{admin.id}", json={"active": False}, headers=admin.headers
    )

    assert response.status_code == 409  # the last administrator stays
    fan_out(hooks_app)
    assert webhook_rows(hooks_app) == []


def test_a_deleted_endpoint_skips_its_waiting_deliveries(
    hooks_app, admin, member, receiver, deliver_webhooks
):
    hook = subscribe(hooks_app, admin, receiver.url)
    rename(hooks_app, admin, member.id, "Orphan")
    fan_out(hooks_app)  # its delivery is written, then the endpoint goes
    hooks_app.test_client().delete(f"{HOOKS}{hook['id']}", headers=admin.headers)

    deliver_webhooks(hooks_app)

    assert receiver.requests == []
    [row] = webhook_rows(hooks_app)
    assert (row.status, row.last_error) == (SENT, "skipped: endpoint deleted")


def test_a_duplicate_job_finds_the_message_sent_and_posts_nothing(
    hooks_app, admin, member, receiver, deliver_webhooks
):
    from webapp.webhooks.delivery import Result
    from webapp.webhooks.delivery import deliver as deliver_one

    subscribe(hooks_app, admin, receiver.url)
    rename(hooks_app, admin, member.id, "Once only")
    deliver_webhooks(hooks_app)
    [row] = webhook_rows(hooks_app)

    with hooks_app.app_context():
        outcome = deliver_one(db.session, row.id, allow_private=True)
        db.session.remove()

    assert outcome.result is Result.DUPLICATE
    assert len(receiver.requests) == 1


def test_410_gone_disables_the_endpoint_and_skips_what_waits(
    hooks_app, admin, member, receiver, deliver_webhooks
):
    from webapp.audit.models import AuditEvent

    hook = subscribe(hooks_app, admin, receiver.url)
    receiver.replies = [(410, b"gone", {})]
    rename(hooks_app, admin, member.id, "First")
    rename(hooks_app, admin, member.id, "Second")

    deliver_webhooks(hooks_app)

    assert len(receiver.requests) == 1
    first, second = webhook_rows(hooks_app)
    assert (first.status, first.attempts, first.last_error) == (
        SENT,
        1,
        "HTTP 410: endpoint disabled",
    )
    assert (second.status, second.last_error) == (SENT, "skipped: endpoint disabled")
    api = hooks_app.test_client()
    assert api.get(f"{HOOKS}{hook['id']}", headers=admin.headers).json["enabled"] is False
    with hooks_app.app_context():
        [audited] = db.session.scalars(
            select(AuditEvent).where(AuditEvent.action == "webhook.disabled")
        )
        assert audited.details == {"reason": "gone", "last_error": "HTTP 410"}
        db.session.remove()
    rename(hooks_app, admin, member.id, "Third")
    assert len(webhook_rows(hooks_app)) == 2  # nothing more queued for it


def test_a_test_event_goes_to_that_endpoint_alone_even_disabled(
    hooks_app, admin, member, receiver, deliver_webhooks
):
    api = hooks_app.test_client()
    other = subscribe(hooks_app, admin, receiver.url)
    hook = subscribe(hooks_app, admin, receiver.url, enabled=False, event_types=["user.deleted"])

    assert api.post(f"{HOOKS}{hook['id']}/test", headers=member.headers).status_code == 403
    response = api.post(f"{HOOKS}{hook['id']}/test", headers=admin.headers)
    assert response.status_code == 202, response.json
    deliver_webhooks(hooks_app)

    [(headers, body)] = receiver.requests
    event = standardwebhooks.Webhook(hook["secret"]).verify(body, headers)
    assert (event["type"], event["id"]) == ("webhook.test", response.json["event_id"])
    assert event["dataschema"] == "urn:gatehouse:events:webhook.test:v1"
    assert event["data"] == {"user_id": str(admin.id), "webhook_id": hook["id"]}
    log = api.get(f"{HOOKS}{other['id']}/deliveries", headers=admin.headers).json["items"]
    assert log == []
    refused = api.post(
        HOOKS, json={"url": receiver.url, "event_types": ["webhook.test"]}, headers=admin.headers
    )
    assert refused.status_code == 422
