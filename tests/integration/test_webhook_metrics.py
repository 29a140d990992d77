"""Webhook metrics against real deliveries: attempts counted by event type and result (delivered,
failed, refused, gone, dead) and timed, read from a real /metrics scrape; the scrape-time gauges
(failing and disabled endpoints, the oldest undelivered message, the most overdue one, dead
letters) read from the
database; and webhook deliveries waiting on their receiver left out of the email outbox's age."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from tests.support.waiting import free_port
from tests.support.webhook_admin import fan_out, make_due, rename, subscribe, webhook_rows
from webapp.db import utcnow
from webapp.events.models import DomainEvent
from webapp.extensions import db
from webapp.outbox.models import DEAD, ENQUEUED, PENDING, OutboxMessage
from webapp.webhooks.delivery import RETRY_SCHEDULE

DELIVERIES = "gatehouse_webhook_deliveries_total"
DURATION = "gatehouse_webhook_delivery_duration_seconds"


def scrape(application) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body = application.test_client().get("/metrics").get_data(as_text=True)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): float(sample.value)
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_attempts_are_counted_by_event_type_and_result_and_timed(
    hooks_app, app, admin, member, receiver, deliver_webhooks
):
    before = scrape(hooks_app)
    subscribe(hooks_app, admin, receiver.url, event_types=["user.updated"])

    receiver.replies = [(200, b"ok", {}), (503, b"busy", {}), (200, b"ok", {})]
    receiver.delay = 1.2  # the first attempt is slow: the histogram must place it above 1 s
    rename(hooks_app, admin, member.id, "Delivered")
    deliver_webhooks(hooks_app)
    receiver.delay = 0.0
    rename(hooks_app, admin, member.id, "Failed once")
    deliver_webhooks(hooks_app)  # 503: retried
    make_due(hooks_app)
    deliver_webhooks(hooks_app)  # delivered on its second try
    # The SSRF guard on (the `app` fixture): the loopback receiver is refused, never POSTed to.
    rename(app, admin, member.id, "Refused")
    deliver_webhooks(app)
    make_due(hooks_app)
    receiver.replies = [(200, b"ok", {}), (410, b"gone", {})]
    deliver_webhooks(hooks_app)  # the refused one, delivered with the guard off
    rename(hooks_app, admin, member.id, "Gone")
    deliver_webhooks(hooks_app)

    after = scrape(hooks_app)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    counted = {
        result: delta(DELIVERIES, event_type="user.updated", result=result)
        for result in ("delivered", "failed", "refused", "gone", "dead")
    }
    assert counted == {"delivered": 3, "failed": 1, "refused": 1, "gone": 1, "dead": 0}
    assert len(receiver.requests) == 5  # the refused attempt sent nothing, yet was counted
    attempts = sum(counted.values())
    assert delta(f"{DURATION}_count") == attempts
    assert delta(f"{DURATION}_bucket", le="+Inf") == attempts
    assert delta(f"{DURATION}_bucket", le="15.0") == attempts
    assert delta(f"{DURATION}_bucket", le="1.0") == attempts - 1  # the slow one is above 1 s
    assert delta(f"{DURATION}_sum") >= 1.2
    # The gone endpoint is disabled: the scrape-time gauge sees it.
    assert value(after, "gatehouse_webhook_endpoints_disabled") == 1
    assert value(after, "gatehouse_webhook_endpoints_failing") == 0


def test_the_state_gauges_read_endpoints_ages_and_dead_letters(
    hooks_app, admin, member, receiver, deliver_webhooks
):
    subscribe(hooks_app, admin, receiver.url)  # healthy: its latest attempt succeeds
    # Nothing listens there: every attempt fails (connection refused).
    subscribe(hooks_app, admin, f"http://127.0.0.1:{free_port()}/hook")
    subscribe(hooks_app, admin, receiver.url, enabled=False)
    fan_out(hooks_app)  # the sign-ins' events: nothing waits for its fan-out
    quiet = scrape(hooks_app)
    assert value(quiet, "gatehouse_webhook_endpoints_failing") == 0  # no attempt yet
    assert value(quiet, "gatehouse_webhook_endpoints_disabled") == 1
    assert value(quiet, "gatehouse_webhook_oldest_undelivered_age_seconds") == 0
    assert value(quiet, "gatehouse_webhook_oldest_overdue_age_seconds") == 0
    assert value(quiet, "gatehouse_webhook_dead_messages") == 0

    rename(hooks_app, admin, member.id, "Half delivered")
    deliver_webhooks(hooks_app)
    [failing] = [row for row in webhook_rows(hooks_app) if row.status == PENDING]
    assert failing.attempts == 1
    # A second change, not tried yet; then both made old: the failing one an hour (its retry
    # still to come), the new ones half an hour, due for 20 minutes and not attempted.
    rename(hooks_app, admin, member.id, "Waiting")
    fan_out(hooks_app)
    now = utcnow()
    with hooks_app.app_context():
        db.session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == failing.id)
            .values(created_at=now - timedelta(seconds=3600))
        )
        db.session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.template == "webhook", OutboxMessage.attempts == 0)
            .values(
                created_at=now - timedelta(seconds=1800),
                available_at=now - timedelta(seconds=1200),
            )
        )
        db.session.commit()
        db.session.remove()

    samples = scrape(hooks_app)
    assert value(samples, "gatehouse_webhook_endpoints_failing") == 1
    assert value(samples, "gatehouse_webhook_endpoints_disabled") == 1
    assert 3600 <= value(samples, "gatehouse_webhook_oldest_undelivered_age_seconds") < 3660
    # Overdue: due and not attempted (the failing one's retry is not due yet).
    assert 1200 <= value(samples, "gatehouse_webhook_oldest_overdue_age_seconds") < 1260
    # The email outbox's age (GatehouseOutboxLagging) counts webhook deliveries until their
    # first attempt only: the half-hour-old untried ones, not the hour-old one retried.
    assert 1800 <= value(samples, "gatehouse_outbox_oldest_unsent_age_seconds") < 1860

    # The failing endpoint's messages run out of tries: dead letters.
    for _ in range(len(RETRY_SCHEDULE) + 1):
        make_due(hooks_app)
        deliver_webhooks(hooks_app)
    dead = [row for row in webhook_rows(hooks_app) if row.status == DEAD]
    assert len(dead) == 2
    samples = scrape(hooks_app)
    assert value(samples, "gatehouse_webhook_dead_messages") == 2
    assert value(samples, "gatehouse_webhook_oldest_undelivered_age_seconds") == 0
    assert value(samples, "gatehouse_webhook_oldest_overdue_age_seconds") == 0
    assert value(samples, "gatehouse_webhook_endpoints_failing") == 1
    assert (
        value(samples, DELIVERIES, event_type="user.updated", result="dead")
        - value(quiet, DELIVERIES, event_type="user.updated", result="dead")
        == 2
    )


def test_overdue_counts_enqueued_deliveries_since_they_were_enqueued_and_retries_not_yet_due(
    hooks_app, admin, member, receiver
):
    subscribe(hooks_app, admin, receiver.url)
    rename(hooks_app, admin, member.id, "Enqueued")
    rename(hooks_app, admin, member.id, "Retry later")
    fan_out(hooks_app)
    first, second = webhook_rows(hooks_app)
    now = utcnow()
    with hooks_app.app_context():
        # In RQ for 12 minutes (its lease not run out): overdue since it was enqueued.
        db.session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == first.id)
            .values(
                status=ENQUEUED,
                enqueued_at=now - timedelta(seconds=720),
                available_at=now + timedelta(seconds=60),
            )
        )
        # Tried and failed two hours ago, its retry an hour from now: late, not overdue.
        db.session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == second.id)
            .values(
                attempts=3,
                created_at=now - timedelta(seconds=7200),
                available_at=now + timedelta(seconds=3600),
            )
        )
        db.session.commit()
        db.session.remove()

    samples = scrape(hooks_app)
    assert 720 <= value(samples, "gatehouse_webhook_oldest_overdue_age_seconds") < 780
    assert 7200 <= value(samples, "gatehouse_webhook_oldest_undelivered_age_seconds") < 7260


def test_an_event_not_yet_fanned_out_is_overdue_since_it_was_written(hooks_app, admin, member):
    fan_out(hooks_app)
    rename(hooks_app, admin, member.id, "Not fanned out")  # no dispatcher has run since
    with hooks_app.app_context():
        db.session.execute(
            update(DomainEvent)
            .where(DomainEvent.fanned_out_at.is_(None))
            .values(created_at=utcnow() - timedelta(seconds=600))
        )
        db.session.commit()
        db.session.remove()

    samples = scrape(hooks_app)
    assert 600 <= value(samples, "gatehouse_webhook_oldest_overdue_age_seconds") < 660
    assert 600 <= value(samples, "gatehouse_webhook_oldest_undelivered_age_seconds") < 660

    fan_out(hooks_app)  # no endpoint: nothing to deliver, nothing waits
    samples = scrape(hooks_app)
    assert value(samples, "gatehouse_webhook_oldest_overdue_age_seconds") == 0
    assert value(samples, "gatehouse_webhook_oldest_undelivered_age_seconds") == 0
