"""Retries, the circuit breaker, dead letters and replay, with a real SMTP server and RQ
(in-process workers: see tests/e2e/test_jobs_faults.py for forked ones)."""

from __future__ import annotations

import logging
import random
from datetime import timedelta

import pybreaker
import pytest
from rq.job import Job
from rq.registry import FailedJobRegistry
from sqlalchemy import select

from jobs import dead_letters, retry
from jobs.delivery import Deliverer, Result, claim_ttl
from jobs.dispatcher import dispatch
from jobs.mailer import BREAKER_STATE_KEY
from jobs.settings import jobs_settings_of
from jobs.tasks import mailer_for
from tests.support.jobs import FAST_JOBS, hold_claim
from tests.support.waiting import free_port
from webapp.config import settings_of
from webapp.db import utcnow
from webapp.extensions import db
from webapp.outbox.models import (
    DEAD,
    ENQUEUED,
    PENDING,
    SENDING,
    SENT,
    EmailDelivery,
    OutboxMessage,
)


def _message(app, message_id) -> OutboxMessage:
    with app.app_context():
        row = db.session.get(OutboxMessage, message_id)
        db.session.expunge_all()
        db.session.remove()
        return row


def _deliveries(app, message_id) -> list[EmailDelivery]:
    with app.app_context():
        rows = list(
            db.session.scalars(select(EmailDelivery).where(EmailDelivery.message_id == message_id))
        )
        db.session.expunge_all()
        db.session.remove()
        return rows


def test_retry_delays_grow_exponentially_with_jitter_around_the_nominal_delay():
    rng = random.Random(7)
    delays = [retry.backoff(n, 10.0, rng=rng) for n in range(1, 6)]

    for n, delay in enumerate(delays, start=1):
        nominal = 10.0 * 2 ** (n - 1)
        assert nominal * 0.8 <= delay <= nominal * 1.2
    assert len({round(d, 6) for d in delays}) == 5
    assert retry.backoff(30, 10.0, rng=rng) <= retry.MAX_DELAY * 1.2


def test_a_refusing_server_spends_every_try_then_the_job_is_a_dead_letter_in_rq_and_the_database(
    jobs_app, smtp_sink, work_jobs, queue_email, rq_connection
):
    smtp_sink.reply = "550 5.7.1 Mailbox unavailable"
    message_id = queue_email("verify_email")

    work_jobs(jobs_app)

    message = _message(jobs_app, message_id)
    assert message.status == DEAD
    assert message.attempts == FAST_JOBS["jobs_max_retries"] + 1
    assert "550 5.7.1 Mailbox unavailable" in message.last_error
    assert message.dead_at is not None
    assert smtp_sink.attempts == message.attempts
    assert smtp_sink.received == []
    registry = FailedJobRegistry("high", connection=rq_connection)
    assert str(message_id) in registry.get_job_ids()
    job = Job.fetch(str(message_id), connection=rq_connection)
    assert "550 5.7.1 Mailbox unavailable" in job.latest_result().exc_string
    [delivery] = _deliveries(jobs_app, message_id)
    assert delivery.status == "failed"
    assert delivery.send_attempts == message.attempts


def test_a_refused_try_schedules_the_next_one_after_the_backoff(
    make_app, smtp_sink, queue_email, app, deliver_now
):
    slow = make_app(smtp_url=smtp_sink.url, jobs_retry_backoff=30.0, jobs_max_retries=3)
    smtp_sink.reply = "451 4.3.0 Try again later"
    message_id = queue_email("new_login")
    before = utcnow()

    outcome = deliver_now(slow, message_id)

    assert outcome.result is Result.RETRY
    message = _message(slow, message_id)
    assert message.status == PENDING
    assert message.attempts == 1
    assert message.available_at >= before + timedelta(seconds=30 * 0.8)
    assert message.available_at <= utcnow() + timedelta(seconds=30 * 1.2)
    assert "451 4.3.0" in message.last_error


def test_replaying_a_dead_letter_delivers_exactly_one_email(
    jobs_app, smtp_sink, work_jobs, queue_email, rq_connection, deliver_now
):
    smtp_sink.reply = "550 5.1.1 No such user"
    # (token emails are replayed with a fresh token: tests/security/test_tokens_at_rest.py)
    message_id = queue_email("new_login", request_id="req-replay-0001")
    work_jobs(jobs_app)
    assert _message(jobs_app, message_id).status == DEAD

    smtp_sink.reply = "250 2.0.0 OK"
    with jobs_app.app_context():
        settings = jobs_settings_of(jobs_app)
        requeued = dead_letters.requeue(db.session, rq_connection, settings, message_id)
        db.session.remove()
    assert requeued.status == ENQUEUED
    assert str(message_id) not in FailedJobRegistry("high", connection=rq_connection).get_job_ids()
    work_jobs(jobs_app)

    [email] = smtp_sink.wait_for(1)
    assert email.subject == "New sign-in to your Gatehouse account"
    message = _message(jobs_app, message_id)
    assert message.status == SENT
    # A job run again for the same message (a duplicate in transit) sends nothing.
    assert deliver_now(jobs_app, message_id).result is Result.DUPLICATE
    assert len(smtp_sink.received) == 1


def test_a_message_that_is_not_dead_cannot_be_requeued_and_an_unknown_one_is_not_found(
    jobs_app, smtp_sink, work_jobs, queue_email, rq_connection
):
    from webapp.errors import Conflict, NotFound

    message_id = queue_email("welcome")
    work_jobs(jobs_app)
    with jobs_app.app_context():
        settings = jobs_settings_of(jobs_app)
        with pytest.raises(Conflict):
            dead_letters.requeue(db.session, rq_connection, settings, message_id)
        with pytest.raises(NotFound):
            dead_letters.requeue(
                db.session, rq_connection, settings, Job.create.__hash__ and _uuid()
            )
        db.session.remove()


def _uuid():
    import uuid

    return uuid.uuid4()


def test_an_unreachable_server_postpones_messages_without_spending_tries_and_opens_the_breaker(
    make_app, app, smtp_sink, queue_email, rq_connection, work_jobs, deliver_now
):
    closed_port = free_port()  # nothing listens there
    away = make_app(
        smtp_url=f"smtp://127.0.0.1:{closed_port}",
        **{**FAST_JOBS, "smtp_breaker_fail_max": 2, "smtp_breaker_reset_timeout": 60.0},
    )
    first, second, third = (queue_email("verify_email") for _ in range(3))

    outcomes = [deliver_now(away, m) for m in (first, second, third)]

    assert [o.result for o in outcomes] == [Result.POSTPONED] * 3
    assert "ConnectionRefusedError" in outcomes[0].detail
    assert "breaker" in outcomes[2].detail  # no connection tried once the breaker is open
    for message_id in (first, second, third):
        message = _message(away, message_id)
        assert message.status == PENDING
        assert message.attempts == 0
        assert message.available_at > utcnow() + timedelta(seconds=50)
    assert rq_connection.get(BREAKER_STATE_KEY) == b"open"

    # The server is back and the breaker closed again: the same messages go out, once each.
    rq_connection.set(BREAKER_STATE_KEY, pybreaker.STATE_CLOSED)
    back = make_app(smtp_url=smtp_sink.url, **FAST_JOBS)
    with back.app_context():
        db.session.execute(OutboxMessage.__table__.update().values(available_at=utcnow()))
        db.session.commit()
        db.session.remove()
    work_jobs(back)
    assert len(smtp_sink.wait_for(3)) == 3


def test_a_live_claim_of_another_worker_postpones_the_job_instead_of_sending(
    jobs_app, smtp_sink, queue_email, deliver_now
):
    message_id = queue_email("verify_email")
    claimed_until = utcnow() + timedelta(seconds=120)
    hold_claim(jobs_app, message_id, claimed_until)

    outcome = deliver_now(jobs_app, message_id)

    assert outcome.result is Result.BUSY
    assert smtp_sink.attempts == 0
    message = _message(jobs_app, message_id)
    assert message.status == PENDING
    assert message.attempts == 0
    assert message.available_at == claimed_until


def test_a_send_interrupted_before_it_was_recorded_is_sent_again_with_the_same_message_id(
    jobs_app, smtp_sink, queue_email, caplog, deliver_now
):
    """The crash window (SMTP said 250, the worker died before recording it): the claim expired,
    so the email goes out again — recognisably the same email, by its Message-ID."""
    message_id = queue_email("verify_email")
    queued_payload = _message(jobs_app, message_id).payload  # secrets still sealed in it
    assert deliver_now(jobs_app, message_id).result is Result.SENT
    with jobs_app.app_context():
        # Roll the records back to how a crash right after the send leaves them.
        db.session.execute(
            EmailDelivery.__table__.update().values(
                status=SENDING, claimed_until=utcnow() - timedelta(seconds=1), sent_at=None
            )
        )
        db.session.execute(
            OutboxMessage.__table__.update().values(status=ENQUEUED, payload=queued_payload)
        )
        db.session.commit()
        db.session.remove()

    with caplog.at_level(logging.WARNING, logger="jobs.delivery"):
        assert deliver_now(jobs_app, message_id).result is Result.SENT

    first, second = smtp_sink.wait_for(2)
    assert first.message_id == second.message_id
    [delivery] = _deliveries(jobs_app, message_id)
    assert delivery.status == "sent"
    assert delivery.send_attempts == 2
    assert "interrupted" in caplog.text


def test_the_claim_outlives_any_send_attempt(jobs_app):
    settings = jobs_settings_of(jobs_app)
    assert claim_ttl(settings) >= 9 * settings.smtp_timeout


def test_low_priority_first_tries_go_out_in_batches_and_each_email_once(
    make_app, app, smtp_sink, queue_email, rq_connection, work_jobs
):
    batching = make_app(smtp_url=smtp_sink.url, **{**FAST_JOBS, "jobs_batch_size": 3})
    ids = [queue_email("welcome") for _ in range(7)]
    queue_email("verify_email")

    with batching.app_context():
        report = dispatch(db.session, rq_connection, jobs_settings_of(batching))
        job_ids = {m.job_id for m in db.session.scalars(select(OutboxMessage))}
        db.session.remove()
    assert report.enqueued == 8
    assert report.jobs == 1 + 3  # one high job, batches of 3, 3 and 1 on low
    assert sum(j.startswith("batch-") for j in job_ids) == 2
    work_jobs(batching)

    received = smtp_sink.wait_for(8)
    assert len({m.message_id for m in received}) == 8
    assert all(_message(batching, m).status == SENT for m in ids)


def test_a_batch_meeting_a_refusing_server_leaves_each_last_try_to_a_job_of_its_own(
    make_app, app, smtp_sink, queue_email, rq_connection, work_jobs
):
    batching = make_app(
        smtp_url=smtp_sink.url, **{**FAST_JOBS, "jobs_batch_size": 10, "jobs_max_retries": 1}
    )
    smtp_sink.reply = "554 5.7.1 Rejected"
    ids = [queue_email("welcome") for _ in range(3)]

    work_jobs(batching)

    failed = set(FailedJobRegistry("low", connection=rq_connection).get_job_ids())
    for message_id in ids:
        message = _message(batching, message_id)
        assert message.status == DEAD
        assert message.attempts == 2
        assert str(message_id) in failed


def test_a_batch_stops_at_an_unreachable_server_and_postpones_the_rest_untried(
    make_app, app, queue_email
):
    away = make_app(smtp_url=f"smtp://127.0.0.1:{free_port()}", **FAST_JOBS)
    ids = [queue_email("welcome") for _ in range(4)]

    with away.app_context():
        settings, jobs_settings = settings_of(away), jobs_settings_of(away)
        mailer = mailer_for(settings, jobs_settings)
        outcomes = Deliverer(db.session, mailer, settings, jobs_settings, batch=True).deliver(ids)
        db.session.remove()

    assert [o.result for o in outcomes] == [Result.POSTPONED] * 4
    assert all(_message(away, m).attempts == 0 for m in ids)


def test_a_message_that_cannot_be_rendered_spends_its_tries_and_dies(
    jobs_app, smtp_sink, queue_email, work_jobs
):
    message_id = queue_email("verify_email", payload={"name": "Ada"})  # no link, no expiry

    work_jobs(jobs_app)

    message = _message(jobs_app, message_id)
    assert message.status == DEAD
    assert "cannot render" in message.last_error
    assert smtp_sink.attempts == 0


def test_a_job_for_a_message_that_no_longer_exists_is_skipped(jobs_app, smtp_sink, deliver_now):
    assert deliver_now(jobs_app, _uuid()).result is Result.SKIPPED
    assert smtp_sink.attempts == 0
