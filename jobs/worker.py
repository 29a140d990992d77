"""The worker process: `flask --app wsgi jobs worker`.

An RQ worker on `high`, `default`, `low` (strict priority: it always empties `high` first) plus
the outbox dispatcher in a thread beside it. Each job runs in a forked work-horse, so a job that
crashes or leaks cannot take the worker down.

Shutdown: on SIGTERM (or Ctrl-C) RQ's warm shutdown lets the job in hand finish — bounded by its
timeout (see `jobs.delivery.job_timeout`) — then the worker exits; a second signal kills the
horse at once. A job cut short (second signal, SIGKILL, a lost node) is safe: its message is still
`enqueued` in the database, `jobs.recovery` (or its lease) brings it back within seconds, and
its delivery claim keeps the email from going out twice. Give the worker's Kubernetes pod a
termination grace period longer than the job timeout.

The request id of the request that wrote a message travels in the job's meta and is bound to
the logging context around the job, so the worker's lines about that job carry it.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence
from typing import Any

from flask import Flask
from rq import SimpleWorker, Worker
from rq.job import Job
from rq.queue import Queue

from jobs import queues, runtime
from jobs.dispatcher import DispatcherThread, dispatch
from jobs.recovery import JOB_MONITORING_INTERVAL, die_with_parent, release_killed
from observability.context import bound
from observability.worker import process_exited, serve_metrics
from webapp.config import Settings
from webapp.extensions import db

log = logging.getLogger(__name__)


class _JobContext:
    """Binds a job's request id to the logging context for everything logged about the job."""

    def execute_job(self, job: Job, queue: Queue) -> Any:
        with bound(request_id=job.meta.get("request_id")):
            return super().execute_job(job, queue)  # type: ignore[misc]


class GatehouseWorker(_JobContext, Worker):
    """The production worker: a forked work-horse per job."""

    _killed_job: Job | None = None

    def fork_work_horse(self, job: Job, queue: Queue) -> None:
        with runtime.fork_guard():
            super().fork_work_horse(job, queue)

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        die_with_parent(self.pid)  # a horse must not outlive the worker that beats for it
        super().main_work_horse(job, queue)

    def handle_work_horse_killed(self, job: Job, *args: Any) -> None:
        super().handle_work_horse_killed(job, *args)
        self._killed_job = job

    def monitor_work_horse(self, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> Any:
        horse = self.horse_pid
        self._killed_job = None
        try:
            return super().monitor_work_horse(job, queue, *args, **kwargs)
        finally:
            if horse:
                process_exited(horse)
            if self._killed_job is not None:  # after RQ filed it as failed, not before
                release_killed(self._killed_job, self.connection)


class InProcessWorker(_JobContext, SimpleWorker):
    """Runs jobs in the worker's own process (tests, one-off `--burst --in-process` runs)."""


def build_worker(
    settings: Settings,
    *,
    queue_names: Sequence[str] = queues.QUEUES,
    name: str | None = None,
    in_process: bool = False,
) -> Worker | SimpleWorker:
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL must be set to run a job worker")
    connection = queues.connect(settings.redis_url)
    worker_class = InProcessWorker if in_process else GatehouseWorker
    return worker_class(
        [queues.queue(q, connection) for q in queue_names],
        connection=connection,
        name=name,
        job_monitoring_interval=JOB_MONITORING_INTERVAL,
    )


def _prepare_for_forking(settings: Settings) -> None:
    """Do once in the worker what every forked work-horse would otherwise redo per job."""
    from jobs import emails, tasks
    from jobs.mailer import tls_context

    emails.warm_up()
    mailer = tasks.mailer_for(settings)
    if mailer.config.implicit_tls or mailer.config.starttls:
        tls_context()
    # Keep the garbage collector off everything loaded so far: otherwise each horse's GC writes
    # to those pages and the kernel copies them (copy-on-write), per job.
    gc.collect()
    gc.freeze()


def run(
    app: Flask,
    *,
    burst: bool = False,
    with_dispatcher: bool = True,
    queue_names: Sequence[str] = queues.QUEUES,
    name: str | None = None,
    in_process: bool = False,
    metrics_port: int | None = None,
) -> bool:
    """Work until stopped (or, with `burst`, until the queues are empty); True if any job ran.

    With `metrics_port`, the worker serves its own `/metrics` (Prometheus job gatehouse-worker).
    """
    settings: Settings = app.config["GATEHOUSE"]
    runtime.bind_app(app)
    if metrics_port is not None:
        serve_metrics(metrics_port)
    _prepare_for_forking(settings)
    worker = build_worker(settings, queue_names=queue_names, name=name, in_process=in_process)
    assert settings.redis_url is not None
    dispatcher_connection = queues.connect(settings.redis_url, socket_timeout=5)
    thread: DispatcherThread | None = None
    if with_dispatcher and burst:
        with app.app_context():
            try:
                dispatch(db.session, dispatcher_connection, settings)
            finally:
                db.session.remove()
    elif with_dispatcher:
        thread = DispatcherThread(app, dispatcher_connection)
        thread.start()
    log.info(
        "job worker starting",
        extra={"queues": list(queue_names), "dispatcher": with_dispatcher, "burst": burst},
    )
    try:
        return worker.work(burst=burst, logging_level=settings.log_level)
    finally:
        if thread is not None:
            thread.stop()
        log.info("job worker stopped")
