"""Fault tests with real worker processes (`flask --app wsgi jobs worker`: forked work-horses,
the dispatcher thread), a real SMTP server, PostgreSQL and Redis: workers killed, stopped and
racing, and still every email exactly once."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import redis
from sqlalchemy import func, select

from jobs.settings import JobsSettings
from tests.support.waiting import wait_until
from webapp.extensions import db
from webapp.outbox.models import ENQUEUED, SENT, EmailDelivery, OutboxMessage


def _statuses(app) -> Counter[str]:
    with app.app_context():
        rows = db.session.execute(
            select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
        ).all()
        db.session.remove()
    return Counter(dict(rows))


def _sole_delivery(app) -> EmailDelivery:
    with app.app_context():
        [delivery] = db.session.scalars(select(EmailDelivery)).all()
        db.session.expunge_all()
        db.session.remove()
        return delivery


def _delivery_to(app, recipient: str) -> EmailDelivery:
    with app.app_context():
        delivery = db.session.scalars(
            select(EmailDelivery)
            .join(OutboxMessage, OutboxMessage.id == EmailDelivery.message_id)
            .where(OutboxMessage.recipient == recipient)
        ).one()
        db.session.expunge_all()
        db.session.remove()
        return delivery


def test_a_worker_killed_with_sigkill_mid_send_leaves_the_email_to_be_delivered_once(
    app, smtp_sink, queue_email, start_worker
):
    import threading

    smtp_sink.hold = threading.Event()
    queue_email("verify_email", recipient="victim@example.com")
    doomed = start_worker()
    assert smtp_sink.entered.wait(30), "the first worker never started sending"

    # A node lost mid-send: the worker and its work-horse die at once, before the server's 250.
    for pid in [*doomed.horse_pids(), doomed.pid]:
        os.kill(pid, signal.SIGKILL)
    doomed.popen.wait(timeout=10)
    smtp_sink.wait_until(lambda sink: sink.abandoned == 1)
    smtp_sink.hold.set()
    smtp_sink.hold = None
    assert smtp_sink.received == []

    start_worker()  # the lease brings the message back; the expired claim lets it be sent

    [email] = smtp_sink.wait_for(1)
    assert email.rcpt_tos == ["victim@example.com"]
    wait_until(lambda: _statuses(app)[SENT] == 1)
    delivery = _sole_delivery(app)
    assert delivery.status == "sent"
    assert delivery.send_attempts == 2
    assert len(smtp_sink.received) == 1


def test_sigterm_during_a_job_lets_it_finish_then_the_worker_exits_cleanly(
    app, smtp_sink, queue_email, start_worker
):
    import threading

    smtp_sink.hold = threading.Event()
    queue_email("password_reset", recipient="patient@example.com", request_id="req-sigterm-0001")
    worker = start_worker()
    assert smtp_sink.entered.wait(30)

    worker.popen.send_signal(signal.SIGTERM)
    wait_until(lambda: "warm shut down requested" in worker.log_path.read_text())
    smtp_sink.hold.set()

    assert worker.popen.wait(timeout=30) == 0
    [email] = smtp_sink.wait_for(1)
    assert email.rcpt_tos == ["patient@example.com"]
    assert _statuses(app)[SENT] == 1
    # The request id of the request that wrote the message is on the worker's lines for its job,
    # both RQ's (in the worker and the work-horse) and ours.
    tagged = [line for line in worker.log_lines() if line.get("request_id") == "req-sigterm-0001"]
    assert {"rq.worker", "jobs.delivery"} <= {line["logger"] for line in tagged}
    assert any(line["message"] == "email sent" for line in tagged)


def _quiet(connection) -> bool:
    """No job waiting or running on any queue: every duplicate in transit has run."""
    from rq import Queue
    from rq.registry import StartedJobRegistry

    from jobs.queues import QUEUES

    return all(
        Queue(name, connection=connection).count == 0
        and StartedJobRegistry(name, connection=connection).count == 0
        for name in QUEUES
    )


def test_two_workers_with_two_dispatchers_racing_send_each_email_exactly_once(
    app, smtp_sink, queue_email, start_worker, rq_connection
):
    smtp_sink.delay = 0.01
    templates = ["verify_email", "new_login", "welcome", "password_reset"]
    count = 80
    for index in range(count):
        queue_email(templates[index % len(templates)], recipient=f"racer{index}@example.com")

    # A lease shorter than the backlog makes the dispatchers re-enqueue messages still queued
    # or in flight: the claims must absorb every duplicate.
    for _ in range(2):
        start_worker(JOBS_LEASE="0.3", JOBS_BATCH_SIZE="5")

    received = smtp_sink.wait_for(count, timeout=90)
    wait_until(lambda: _statuses(app)[SENT] == count, timeout=60)
    # Every straggling duplicate job has run (none waits or runs any more): it sent nothing.
    wait_until(lambda: _quiet(rq_connection), timeout=60)
    received = list(smtp_sink.received)
    assert len(received) == count
    assert len({m.message_id for m in received}) == count
    assert sorted(r for m in received for r in m.rcpt_tos) == sorted(
        f"racer{i}@example.com" for i in range(count)
    )


# --- recovery in seconds, with the default settings (jobs.recovery) ------------------------------

DEFAULTS = {
    "SMTP_TIMEOUT": str(JobsSettings().smtp_timeout),
    "JOBS_RETRY_BACKOFF": str(JobsSettings().jobs_retry_backoff),
    "JOBS_DISPATCH_INTERVAL": str(JobsSettings().jobs_dispatch_interval),
    "JOBS_LEASE": str(JobsSettings().jobs_lease),
}


def _elapsed_until(condition: Callable[[], bool], since: float, deadline: float) -> float:
    """Seconds from `since` until `condition` held; fails once `deadline` seconds passed."""
    left = deadline - (time.monotonic() - since)
    wait_until(condition, timeout=max(left, 0.0), interval=0.1, message="not in time")
    return time.monotonic() - since


def _nothing_queued(connection) -> bool:
    from rq import Queue

    from jobs.queues import QUEUES

    return all(Queue(name, connection=connection).count == 0 for name in QUEUES)


def _nothing_left_to_send(app, smtp_sink, queue_email, connection, template: str) -> None:
    """Make the absence of a late duplicate observable: a sentinel message of the same template
    (so the same queue), written now, is sent by the one live worker, which runs one job at a
    time in queue order. Once the sentinel arrived, every message is sent and no job waits on any
    queue, a duplicate in transit has had its turn: it ran before the sentinel did."""
    before = len(smtp_sink.received)
    queue_email(template, recipient="sentinel@example.com")
    smtp_sink.wait_until(lambda sink: len(sink.to("sentinel@example.com")) >= 1, timeout=60)
    wait_until(lambda: set(_statuses(app)) == {SENT}, timeout=30, message="messages left unsent")
    wait_until(lambda: _nothing_queued(connection), timeout=30, message="jobs still queued")
    assert len(smtp_sink.to("sentinel@example.com")) == 1
    assert len(smtp_sink.received) >= before + 1


def test_after_redis_restarts_empty_every_accepted_email_is_delivered_within_30_seconds(
    app, smtp_sink, queue_email, start_worker, throwaway_redis
):
    import threading

    assert JobsSettings().jobs_lease == 300  # the lease alone would take five minutes
    recipients = [f"restart{i}@example.com" for i in range(4)]
    smtp_sink.hold = threading.Event()
    for recipient in recipients:
        queue_email("new_login", recipient=recipient)
    start_worker(REDIS_URL=throwaway_redis.url, **DEFAULTS)
    # One job is mid-send, the other three wait in Redis' queue when Redis goes away.
    assert smtp_sink.entered.wait(30), "the worker never started sending"
    wait_until(lambda: _statuses(app)[ENQUEUED] == 4)

    throwaway_redis.stop()
    throwaway_redis.start()  # no persistence: the three queued jobs are gone
    back = time.monotonic()
    smtp_sink.hold.set()
    smtp_sink.hold = None

    took = _elapsed_until(lambda: len(smtp_sink.received) >= 4, since=back, deadline=30)
    wait_until(lambda: _statuses(app)[SENT] == 4)
    print(f"\n4 emails delivered {took:.1f}s after Redis came back empty")
    # A straggling duplicate job would have sent by the time the sentinel did: none did.
    _nothing_left_to_send(
        app, smtp_sink, queue_email, redis.Redis.from_url(throwaway_redis.url), "new_login"
    )
    assert sorted(r for m in smtp_sink.received for r in m.rcpt_tos) == sorted(
        [*recipients, "sentinel@example.com"]
    )


def test_after_a_worker_and_its_horse_are_sigkilled_mid_send_the_email_arrives_within_60_s(
    app, smtp_sink, queue_email, start_worker, rq_connection
):
    import threading

    smtp_sink.hold = threading.Event()
    queue_email("password_reset", recipient="orphan@example.com")
    doomed = start_worker(**DEFAULTS)
    assert smtp_sink.entered.wait(30), "the first worker never started sending"

    for pid in [*doomed.horse_pids(), doomed.pid]:
        os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    doomed.popen.wait(timeout=10)
    smtp_sink.wait_until(lambda sink: sink.abandoned == 1)
    smtp_sink.hold.set()
    smtp_sink.hold = None
    start_worker(**DEFAULTS)  # lease (300 s) and claim (100 s) both still run

    took = _elapsed_until(lambda: len(smtp_sink.received) >= 1, since=killed, deadline=60)
    wait_until(lambda: _statuses(app)[SENT] == 1)
    print(f"\nemail delivered {took:.1f}s after its worker was SIGKILLed")
    _nothing_left_to_send(app, smtp_sink, queue_email, rq_connection, "password_reset")
    assert len(smtp_sink.to("orphan@example.com")) == 1
    assert len(smtp_sink.received) == 2  # the orphan once, the sentinel
    delivery = _delivery_to(app, "orphan@example.com")
    assert (delivery.status, delivery.send_attempts) == ("sent", 2)


def test_a_slow_but_alive_worker_is_not_taken_for_dead(
    app, smtp_sink, queue_email, start_worker, rq_connection
):
    """Its worker keeps beating while the horse waits on the server: a sweep with a threshold
    of two heartbeats (10 s) sees it alive for 20 s, and the email goes out once."""
    import threading

    from jobs.recovery import Recovery

    smtp_sink.hold = threading.Event()
    queue_email("verify_email", recipient="slow@example.com")
    # A client timeout above the 20 s the server keeps it waiting: slow, not failed.
    start_worker(**{**DEFAULTS, "SMTP_TIMEOUT": "30"})
    assert smtp_sink.entered.wait(30)

    recovery = Recovery(stale_after=10, sweep_interval=0)
    watched = time.monotonic()
    with app.app_context():
        while time.monotonic() - watched < 20:
            report = recovery.check(db.session, rq_connection)
            assert (report.orphaned, report.released) == (0, 0), report
            time.sleep(0.5)
        db.session.remove()
    smtp_sink.hold.set()
    smtp_sink.hold = None

    smtp_sink.wait_for(1)
    wait_until(lambda: _statuses(app)[SENT] == 1)
    _nothing_left_to_send(app, smtp_sink, queue_email, rq_connection, "verify_email")
    assert len(smtp_sink.to("slow@example.com")) == 1
    assert len(smtp_sink.received) == 2  # the slow one once, the sentinel
    assert _delivery_to(app, "slow@example.com").send_attempts == 1


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def test_a_work_horse_killed_alone_has_its_email_sent_again_at_once(
    app, smtp_sink, queue_email, start_worker, rq_connection
):
    """An OOM kill takes the horse, not its worker: the worker saw it die and frees the message."""
    import threading

    smtp_sink.hold = threading.Event()
    queue_email("verify_email", recipient="oom@example.com")
    worker = start_worker(**DEFAULTS)
    assert smtp_sink.entered.wait(30)
    [horse] = worker.horse_pids()

    os.kill(horse, signal.SIGKILL)
    killed = time.monotonic()
    smtp_sink.wait_until(lambda sink: sink.abandoned == 1)
    smtp_sink.hold.set()
    smtp_sink.hold = None

    took = _elapsed_until(lambda: len(smtp_sink.received) >= 1, since=killed, deadline=15)
    wait_until(lambda: _statuses(app)[SENT] == 1)
    print(f"\nemail delivered {took:.1f}s after its work-horse was SIGKILLed")
    _nothing_left_to_send(app, smtp_sink, queue_email, rq_connection, "verify_email")
    assert len(smtp_sink.to("oom@example.com")) == 1
    assert len(smtp_sink.received) == 2  # the email once, the sentinel
    assert _delivery_to(app, "oom@example.com").send_attempts == 2
    assert worker.popen.poll() is None


def test_a_work_horse_dies_with_its_worker(app, smtp_sink, queue_email, start_worker):
    """Otherwise a horse whose worker was SIGKILLed would go on sending with nobody beating for
    it, and the sweep would free its claim under it."""
    import threading

    smtp_sink.hold = threading.Event()
    queue_email("verify_email", recipient="pdeathsig@example.com")
    worker = start_worker(**DEFAULTS)
    assert smtp_sink.entered.wait(30)
    [horse] = worker.horse_pids()

    os.kill(worker.pid, signal.SIGKILL)
    worker.popen.wait(timeout=10)

    wait_until(lambda: _gone(horse), timeout=5)
    smtp_sink.wait_until(lambda sink: sink.abandoned == 1, timeout=5)
