"""The worker: `flask --app wsgi jobs worker`.

An RQ worker on `high`, `default`, `low` (strict priority: it always empties `high` first) plus
the outbox dispatcher in a thread beside it. Two processes (see `jobs.supervisor`): the
supervisor runs the dispatcher and keeps one job process running; the job process runs jobs one
after another in itself, with one pooled database connection and one SMTP connection kept
between jobs, and is replaced after `JOBS_WORKER_MAX_JOBS` jobs or once it grew past
`JOBS_WORKER_MAX_MEMORY_MB`. `--burst` and `--in-process` run the jobs in the command's own
process, without a supervisor.

Shutdown: on SIGTERM (or Ctrl-C) RQ's warm shutdown lets the job in hand finish — bounded by its
timeout (see `jobs.delivery.job_timeout`) — then the worker exits; a second signal kills the job
process at once. A job cut short (second signal, SIGKILL, a lost node) is safe: its message is
still `enqueued` in the database, `jobs.recovery` (or its lease) brings it back within seconds,
and its delivery claim keeps the email from going out twice. Give the worker's Kubernetes pod a
termination grace period longer than the job timeout.

Liveness: each turn of RQ's loop (a job done, or at most `jobs.health.IDLE_TICK` seconds of
waiting for one) is marked, and becomes the file `python -m jobs.health` checks (`jobs.health`).

The request id of the request that wrote a message travels in the job's meta and is bound to
the logging context around the job, so the worker's lines about that job carry it.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import resource
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import redis
from flask import Flask
from rq import SimpleWorker
from rq.job import Job
from rq.queue import Queue
from rq.utils import now

from jobs import emails, queues, runtime, tasks
from jobs.dispatcher import DispatcherThread, dispatch
from jobs.health import IDLE_TICK, LOOP_ALLOWANCE, LivenessFile
from jobs.mailer import tls_context
from jobs.recovery import JOB_MONITORING_INTERVAL
from jobs.settings import JobsSettings, jobs_settings_of
from jobs.supervisor import BEAT_INTERVAL, OVERRUN_GRACE, JobWatch, Supervisor
from observability import tracing
from observability.context import bound
from observability.worker import serve_metrics
from webapp.config import Settings, settings_of
from webapp.extensions import db

log = logging.getLogger(__name__)


class _JobContext:
    """Binds a job's request id to the logging context for everything logged about the job."""

    def execute_job(self, job: Job, queue: Queue) -> Any:
        with bound(request_id=job.meta.get("request_id")):
            # A mixin: `execute_job` is that of the RQ worker class it is mixed into.
            return super().execute_job(job, queue)  # type: ignore[misc]


def resident_megabytes() -> float:
    """This process's resident memory now (Linux), else its peak."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class GatehouseWorker(_JobContext, SimpleWorker):
    """The job process's worker: jobs in this process, one after another. Under a supervisor
    it marks each job's deadline and each turn of its loop on the supervisor's `JobWatch`
    (without one, on its own `liveness` file), and stops (to be replaced) after the job during
    which its memory passed `max_memory_mb`."""

    watch: JobWatch | None = None
    liveness: LivenessFile | None = None
    max_memory_mb: float | None = None

    @property
    def dequeue_timeout(self) -> int:
        """How long one wait for a job lasts (RQ's default is minutes): the loop turns, and
        shows it is alive, at least this often."""
        return IDLE_TICK

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """RQ's loop calls this on each turn (before and after a job, around each wait): the
        turn is marked for liveness before any Redis work, so a Redis outage, which RQ's loop
        rides out by retrying, does not look like a dead loop. Then `beat_registry`."""
        if pipeline is None:
            self._loop_turned()
        self.beat_registry(timeout, pipeline)

    def beat_registry(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """RQ's heartbeat on its worker hash. RQ beats three times per job, three Redis round
        trips each: a third of a short job's Redis work. Here a beat within a second of the last
        one is skipped (the beat thread keeps the worker alive during a job) and the rest go in
        one round trip. Beats RQ sends within its own pipelines (with a job's timeout) are left
        as they are."""
        if pipeline is not None:
            super().heartbeat(timeout, pipeline)
            return
        if self.last_heartbeat is not None and (now() - self.last_heartbeat).total_seconds() < 1:
            return
        with self.connection.pipeline(transaction=False) as pipe:
            super().heartbeat(timeout, pipe)
            pipe.execute()

    def _loop_turned(self) -> None:
        if self.watch is not None:
            self.watch.loop_turned()
        elif self.liveness is not None:
            self.liveness.alive_for(LOOP_ALLOWANCE)

    def execute_job(self, job: Job, queue: Queue) -> Any:
        timeout = float(job.timeout or Queue.DEFAULT_TIMEOUT)
        if self.watch is not None:
            self.watch.job_started(timeout)
        elif self.liveness is not None:
            self.liveness.alive_for(max(timeout + OVERRUN_GRACE, LOOP_ALLOWANCE), force=True)
        try:
            return super().execute_job(job, queue)
        finally:
            if self.watch is not None:
                self.watch.job_ended()
            self._check_memory()

    def _check_memory(self) -> None:
        if self.max_memory_mb is None or self._stop_requested:
            return
        used = resident_megabytes()
        if used > self.max_memory_mb:
            log.warning(
                "job process over its memory limit: replaced after this job",
                extra={"resident_mb": round(used), "limit_mb": self.max_memory_mb},
            )
            self._stop_requested = True


class _Beat(threading.Thread):
    """Marks the job process alive on the watch every second and, every
    `JOB_MONITORING_INTERVAL`, on its RQ worker hash — the heartbeat `jobs.recovery` reads —
    also while a job waits on a slow server."""

    def __init__(self, worker: GatehouseWorker, watch: JobWatch) -> None:
        super().__init__(name="job-process-beat", daemon=True)
        self.worker, self.watch = worker, watch
        self._stop_event = threading.Event()

    def run(self) -> None:
        next_heartbeat = 0.0
        while not self._stop_event.wait(BEAT_INTERVAL):
            self.watch.beat()
            next_heartbeat -= BEAT_INTERVAL
            if next_heartbeat <= 0:
                next_heartbeat = JOB_MONITORING_INTERVAL
                # Redis away: RQ's own loop reports it; the next beat tries again.
                with contextlib.suppress(redis.RedisError):
                    self.worker.beat_registry()

    def stop(self) -> None:
        self._stop_event.set()


def _redis_url(settings: Settings) -> str:
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL must be set to run a job worker")
    return settings.redis_url


def build_worker(
    settings: Settings,
    *,
    queue_names: Sequence[str] = queues.QUEUES,
    name: str | None = None,
) -> GatehouseWorker:
    connection = queues.connect(_redis_url(settings))
    return GatehouseWorker(
        [queues.queue(q, connection) for q in queue_names],
        connection=connection,
        name=name,
        job_monitoring_interval=JOB_MONITORING_INTERVAL,
    )


def _prepare_for_forking(settings: Settings, jobs_settings: JobsSettings) -> None:
    """Do once in the supervisor what every job process would otherwise redo."""
    emails.warm_up()
    mailer = tasks.mailer_for(settings, jobs_settings)
    if mailer.config.implicit_tls or mailer.config.starttls:
        tls_context()
    # Keep the garbage collector off everything loaded so far: otherwise each job process's GC
    # writes to those pages and the kernel copies them (copy-on-write).
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
    """Work until stopped (or, with `burst`, until the queues are empty). True if any job ran
    (in-process and burst runs; a supervised worker returns True once stopped cleanly).

    With `metrics_port`, the worker serves its own `/metrics` (Prometheus job gatehouse-worker).
    """
    settings, jobs_settings = settings_of(app), jobs_settings_of(app)
    runtime.bind_app(app)
    if metrics_port is not None:
        serve_metrics(metrics_port)
    _prepare_for_forking(settings, jobs_settings)
    dispatcher_connection = queues.connect(_redis_url(settings), socket_timeout=5)
    thread: DispatcherThread | None = None
    if with_dispatcher and burst:
        with app.app_context():
            try:
                dispatch(db.session, dispatcher_connection, jobs_settings)
            finally:
                db.session.remove()
    elif with_dispatcher:
        thread = DispatcherThread(app, dispatcher_connection)
        thread.start()
    log.info(
        "job worker starting",
        extra={"queues": list(queue_names), "dispatcher": with_dispatcher, "burst": burst},
    )
    liveness = None if burst else LivenessFile(jobs_settings.jobs_liveness_file)
    try:
        if burst or in_process:
            worker = build_worker(settings, queue_names=queue_names, name=name)
            worker.liveness = liveness
            return worker.work(burst=burst, logging_level=settings.log_level)

        def job_main(watch: JobWatch, process_name: str) -> int:
            worker = build_worker(settings, queue_names=queue_names, name=process_name)
            worker.watch, worker.max_memory_mb = watch, jobs_settings.jobs_worker_max_memory_mb
            beat = _Beat(worker, watch)
            beat.start()
            try:
                worker.work(
                    logging_level=settings.log_level, max_jobs=jobs_settings.jobs_worker_max_jobs
                )
            finally:
                beat.stop()
                # A polite QUIT on the kept connection.
                tasks.mailer_for(settings, jobs_settings).close()
                # The job process ends with os._exit: its queued spans go now or never.
                tracing.flush()
            return 0

        supervisor = Supervisor(
            job_main, dispatcher_connection, name or uuid.uuid4().hex, liveness=liveness
        )
        return supervisor.run() == 0
    finally:
        if thread is not None:
            thread.stop()
        log.info("job worker stopped")
