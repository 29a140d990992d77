"""The job process is replaced after `JOBS_WORKER_MAX_JOBS` jobs and once it grew past
`JOBS_WORKER_MAX_MEMORY_MB`, by real `flask --app wsgi jobs worker` processes: every email still
goes out once, and the supervisor runs on."""

from __future__ import annotations

from sqlalchemy import func, select

from tests.support.waiting import wait_until
from webapp.extensions import db
from webapp.outbox.models import SENT, OutboxMessage


def _sent(app) -> int:
    with app.app_context():
        count = db.session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.status == SENT)
        )
        db.session.remove()
    return int(count or 0)


def _recycled(worker) -> list[dict]:
    return [
        line for line in worker.log_lines() if line["message"] == "job worker: job process recycled"
    ]


def test_the_job_process_is_replaced_after_its_job_count(app, smtp_sink, queue_email, start_worker):
    recipients = [f"count{i}@example.com" for i in range(5)]
    for recipient in recipients:
        queue_email("verify_email", recipient=recipient)

    worker = start_worker(JOBS_WORKER_MAX_JOBS="2")

    smtp_sink.wait_for(5)
    assert sorted(r for m in smtp_sink.received for r in m.rcpt_tos) == recipients
    wait_until(lambda: len(_recycled(worker)) >= 2)
    pids = {line["pid"] for line in _recycled(worker)}
    assert len(pids) >= 2  # a new process each time
    assert worker.popen.poll() is None
    wait_until(lambda: _sent(app) == 5)  # recorded right after the server's 250


def test_a_job_process_over_its_memory_limit_is_replaced_after_its_job(
    app,
    smtp_sink,
    queue_email,
    start_worker,
):
    recipients = [f"memory{i}@example.com" for i in range(3)]
    for recipient in recipients:
        queue_email("verify_email", recipient=recipient)

    worker = start_worker(JOBS_WORKER_MAX_MEMORY_MB="1")  # any Python process is above it

    smtp_sink.wait_for(3)
    wait_until(lambda: len(_recycled(worker)) >= 3)
    warnings = [
        line
        for line in worker.log_lines()
        if line["message"] == "job process over its memory limit: replaced after this job"
    ]
    assert len(warnings) >= 3
    assert all(line["limit_mb"] == 1 for line in warnings)
    assert sorted(r for m in smtp_sink.received for r in m.rcpt_tos) == recipients
    assert worker.popen.poll() is None
