"""Recovery of lost jobs (`jobs.recovery`) on real PostgreSQL and Redis: a Redis that came back
empty is noticed by its `run_id`, a started job whose worker stopped beating is found by the
sweep; either way the messages are due at once, and only orphaned claims are released."""

from __future__ import annotations

import uuid
from datetime import timedelta

import redis
from rq.job import Job
from rq.worker import Worker
from sqlalchemy import select

from jobs import queues
from jobs.dispatcher import dispatch
from jobs.recovery import STALE_AFTER, Recovery, RedisEpoch, release_killed, release_orphans
from jobs.settings import jobs_settings_of
from tests.support.jobs import hold_claim
from tests.support.rows import stored_row
from webapp.db import utcnow
from webapp.extensions import db
from webapp.outbox.models import ENQUEUED, EmailDelivery, OutboxMessage


def _claim(app, message_id: uuid.UUID, seconds: float = 100) -> None:
    """A live delivery claim, as a job that started sending holds it."""
    hold_claim(app, message_id, utcnow() + timedelta(seconds=seconds))


def _dispatched(app, queue_email, connection: redis.Redis, template: str) -> uuid.UUID:
    """A message written and moved to its queue by a dispatcher pass; returns its id."""
    message_id = queue_email(template)
    with app.app_context():
        dispatch(db.session, connection, jobs_settings_of(app))
        db.session.remove()
    return message_id


def _claimed_until(app, message_id: uuid.UUID):
    with app.app_context():
        value = db.session.scalar(
            select(EmailDelivery.claimed_until).where(EmailDelivery.message_id == message_id)
        )
        db.session.remove()
        return value


def _start_on_worker(connection: redis.Redis, job_id: str, name: str) -> Worker:
    """What an RQ worker does when it takes a job: an execution in the started registry, its
    own and the job's heartbeat, the job marked started by it."""
    job = Job.fetch(job_id, connection=connection)
    worker = Worker(queues.all_queues(connection), connection=connection, name=name)
    worker.register_birth()
    for queue in queues.all_queues(connection):
        connection.lrem(queue.key, 0, job_id)  # dequeued
    worker.prepare_execution(job)
    worker.prepare_job_execution(job)
    return worker


def test_the_epoch_changes_when_redis_restarts(throwaway_redis):
    connection = redis.Redis.from_url(throwaway_redis.url)
    epoch = RedisEpoch()
    first = epoch.observe(connection)
    assert first is not None  # never seen: a dispatcher that starts checks once
    epoch.accept(first)
    assert epoch.observe(connection) is None

    throwaway_redis.stop()
    throwaway_redis.start()

    assert epoch.observe(redis.Redis.from_url(throwaway_redis.url)) not in (None, first)


def test_after_redis_restarts_empty_the_lost_messages_are_due_at_once(
    app, make_app, throwaway_redis, queue_email
):
    gatehouse = make_app(redis_url=throwaway_redis.url)
    settings = jobs_settings_of(gatehouse)
    lost = queue_email("new_login")
    recovery = Recovery()
    with gatehouse.app_context():
        connection = queues.connect(throwaway_redis.url, socket_timeout=5)
        assert dispatch(db.session, connection, settings).enqueued == 1
        at_start = recovery.check(db.session, connection)
        db.session.remove()
    assert (at_start.restarted, at_start.lost) == (True, 0)  # its job is there: left alone
    lost_row = stored_row(gatehouse, OutboxMessage, lost)
    assert lost_row.available_at > utcnow() + timedelta(seconds=200)

    throwaway_redis.stop()
    throwaway_redis.start()
    kept = queue_email("new_login")  # enqueued into the new Redis: its job is there
    with gatehouse.app_context():
        connection = queues.connect(throwaway_redis.url, socket_timeout=5)
        assert dispatch(db.session, connection, settings).enqueued == 1
        before = utcnow()
        report = recovery.check(db.session, connection)
        again = recovery.check(db.session, connection)
        after = dispatch(db.session, connection, settings)
        db.session.remove()

    assert (report.restarted, report.lost) == (True, 1)
    assert (again.restarted, again.lost) == (False, 0)
    assert after.enqueued == 1  # the lost one, at once instead of after JOBS_LEASE
    assert Job.exists(str(lost), connection=connection)
    assert stored_row(gatehouse, OutboxMessage, kept).available_at > before + timedelta(seconds=200)


def test_a_started_job_whose_worker_stopped_beating_is_released(app, queue_email, rq_connection):
    settings = jobs_settings_of(app)
    orphan = _dispatched(app, queue_email, rq_connection, "password_reset")
    _start_on_worker(rq_connection, str(orphan), "doomed")
    _claim(app, orphan)

    with app.app_context():
        fresh = release_orphans(db.session, rq_connection)
        later = utcnow() + timedelta(seconds=STALE_AFTER + 1)
        silent = release_orphans(db.session, rq_connection, now=later)
        redispatched = dispatch(db.session, rq_connection, settings, now=later)
        db.session.remove()

    assert fresh == (0, 0)  # it beat just now
    assert silent == (1, 1)
    assert _claimed_until(app, orphan) == later  # the next job may take the claim over
    assert redispatched.enqueued == 1
    assert stored_row(app, OutboxMessage, orphan).status == ENQUEUED


def test_a_started_job_whose_worker_vanished_from_redis_is_released(
    app, queue_email, rq_connection
):
    orphan = _dispatched(app, queue_email, rq_connection, "verify_email")
    worker = _start_on_worker(rq_connection, str(orphan), "vanished")
    rq_connection.delete(worker.key)  # its key expired: nobody renews it any more
    _claim(app, orphan)

    with app.app_context():
        later = utcnow() + timedelta(seconds=STALE_AFTER + 1)
        assert release_orphans(db.session, rq_connection, now=later) == (1, 1)
        db.session.remove()


def test_a_claim_a_live_job_also_holds_is_not_released(app, queue_email, rq_connection):
    """A duplicate in transit: the dead job and a live one carry the same message; the live one
    may be sending it, so its claim stays."""
    shared = _dispatched(app, queue_email, rq_connection, "new_login")
    _start_on_worker(rq_connection, str(shared), "doomed")
    later = utcnow() + timedelta(seconds=STALE_AFTER + 1)
    # The same message in a batch job that a live worker runs (it beats at `later`).
    batch = queues.queue(queues.LOW, rq_connection).enqueue(
        "jobs.tasks.deliver_batch", [str(shared)], job_id=f"batch-{shared}"
    )
    live = _start_on_worker(rq_connection, batch.id, "alive")
    rq_connection.hset(live.key, "last_heartbeat", later.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    _claim(app, shared)

    with app.app_context():
        assert release_orphans(db.session, rq_connection, now=later) == (0, 0)
        db.session.remove()
    assert _claimed_until(app, shared) > later


def test_a_killed_work_horse_frees_its_message_unless_another_started_job_carries_it(
    app, queue_email, rq_connection
):
    from jobs import runtime

    runtime.bind_app(app)
    settings = jobs_settings_of(app)
    alone, shared = queue_email("verify_email"), queue_email("new_login")
    with app.app_context():
        dispatch(db.session, rq_connection, settings)
        db.session.remove()
    for message_id in (alone, shared):
        _start_on_worker(rq_connection, str(message_id), f"worker-{message_id}")
        _claim(app, message_id)
    queues.queue(queues.LOW, rq_connection).enqueue(
        "jobs.tasks.deliver_batch", [str(shared)], job_id=f"batch-{shared}"
    )
    _start_on_worker(rq_connection, f"batch-{shared}", "other")
    before = utcnow()

    for message_id in (alone, shared):
        release_killed(Job.fetch(str(message_id), connection=rq_connection), rq_connection)

    assert stored_row(app, OutboxMessage, alone).available_at <= utcnow()
    assert _claimed_until(app, alone) <= utcnow()
    assert stored_row(app, OutboxMessage, shared).available_at > before + timedelta(seconds=200)
    assert _claimed_until(app, shared) > before + timedelta(seconds=60)
