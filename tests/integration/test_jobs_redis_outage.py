"""Redis away while a user registers: the request succeeds, the message waits in the outbox,
and the email arrives once Redis is back. Uses a throwaway `redis-server` of its own."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from jobs.dispatcher import dispatch
from jobs.settings import jobs_settings_of
from tests.support.accounts import STRONG_PASSWORD
from tests.support.jobs import FAST_JOBS
from webapp.extensions import db
from webapp.outbox.models import PENDING, SENT


def test_registration_succeeds_while_redis_is_down_and_the_email_arrives_after_it_returns(
    app, make_app, smtp_sink, throwaway_redis, work_jobs, outbox
):
    from jobs import queues

    gatehouse = make_app(redis_url=throwaway_redis.url, smtp_url=smtp_sink.url, **FAST_JOBS)
    client = gatehouse.test_client()
    throwaway_redis.stop()

    registered = client.post(
        "/api/v1/auth/register",
        json={"email": "patience@example.com", "password": STRONG_PASSWORD, "name": "Patience"},
    )

    assert registered.status_code == 201, registered.json
    with gatehouse.app_context():
        report = dispatch(
            db.session, queues.connect(throwaway_redis.url), jobs_settings_of(gatehouse)
        )
        db.session.remove()
    assert report.error is not None
    [waiting] = outbox("verify_email")
    assert waiting.status == PENDING

    throwaway_redis.start()  # an empty Redis, as after a restart
    work_jobs(gatehouse)

    [email] = smtp_sink.wait_for(1)
    assert email.rcpt_tos == ["patience@example.com"]
    token = parse_qs(urlsplit(email.link).query)["token"][0]
    assert client.post("/api/v1/auth/verify-email", json={"token": token}).status_code == 204
    assert outbox("verify_email")[0].status == SENT


def test_a_message_enqueued_before_redis_restarted_empty_is_enqueued_again_after_its_lease(
    app, make_app, smtp_sink, throwaway_redis, work_jobs, queue_email, outbox
):
    from datetime import timedelta

    from jobs import queues
    from webapp.db import utcnow

    gatehouse = make_app(redis_url=throwaway_redis.url, smtp_url=smtp_sink.url, **FAST_JOBS)
    settings = jobs_settings_of(gatehouse)
    queue_email("new_login")
    with gatehouse.app_context():
        first = dispatch(db.session, queues.connect(throwaway_redis.url), settings)
        db.session.remove()
    assert first.enqueued == 1

    throwaway_redis.stop()
    throwaway_redis.start()  # Redis keeps nothing across a restart: the job is gone
    with gatehouse.app_context():
        connection = queues.connect(throwaway_redis.url)
        within_lease = dispatch(db.session, connection, settings)
        after_lease = dispatch(
            db.session,
            connection,
            settings,
            now=utcnow() + timedelta(seconds=settings.jobs_lease + 1),
        )
        db.session.remove()
    assert (within_lease.enqueued, after_lease.enqueued) == (0, 1)
    work_jobs(gatehouse)

    assert len(smtp_sink.wait_for(1)) == 1
    assert outbox("new_login")[0].status == SENT


def test_a_message_still_waiting_in_its_queue_keeps_its_job_when_the_lease_ends(
    jobs_app, queue_email, rq_connection, outbox
):
    from datetime import timedelta

    from rq import Queue

    from webapp.db import utcnow

    settings = jobs_settings_of(jobs_app)
    queue_email("welcome")
    with jobs_app.app_context():
        dispatch(db.session, rq_connection, settings)
        later = utcnow() + timedelta(seconds=settings.jobs_lease + 1)
        renewal = dispatch(db.session, rq_connection, settings, now=later)
        db.session.remove()

    assert (renewal.renewed, renewal.enqueued) == (1, 0)
    assert Queue("low", connection=rq_connection).count == 1
    [message] = outbox("welcome")
    assert message.available_at > later
