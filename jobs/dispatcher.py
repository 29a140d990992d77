"""The outbox dispatcher: moves due outbox rows onto RQ queues.

A pass locks up to `limit` due rows with `SELECT … FOR UPDATE SKIP LOCKED` (so any number of
dispatchers, one per worker, share the outbox without waiting on or double-taking each other),
enqueues their jobs in one Redis transaction, then marks the rows `enqueued` with a lease
(`JOBS_LEASE`) and commits. If Redis is unreachable the transaction rolls back and the rows wait;
the request that wrote them never noticed.

A row is due when it is `pending` and its `available_at` has come (new, or waiting for a retry),
or when it is `enqueued` and its lease ran out. Redis keeps nothing across a restart, so a lease
that ran out means one of: the job still waits in its queue (a backlog: the lease is renewed),
or it was lost — Redis restarted, its worker was killed, it was moved to the failed registry as
abandoned. Lost jobs are deleted from RQ and the message enqueued again. A duplicate in transit
is harmless: delivery is idempotent (see `jobs.delivery`). The lease is the backstop: before
each pass `jobs.recovery` ends the leases of messages whose jobs it knows are gone (Redis
restarted empty, a worker died mid-job), so those go out again within seconds, not minutes.

Jobs: one per message (job id = message id) on `high` and `default`, and for retries; first
tries on `low` go in batches of `JOBS_BATCH_SIZE`, read and enqueued chunk by chunk. Webhook
deliveries (template `webhook`, webapp.webhooks) ride the same rows, leases and recovery: one
`jobs.tasks.deliver_webhook` job per (event, endpoint) message. Each pass first fans the domain
events committed since out to their endpoints (`webapp.webhooks.fanout`: the messages are written
here, not in the request), and enqueues only the webhook messages their endpoint's lane lets go
(`webapp.webhooks.lanes`: a free slot, event order).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import redis
from flask import Flask
from rq.job import Job, JobStatus
from rq.queue import EnqueueData, Queue
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from jobs import queues, runtime
from jobs.delivery import job_timeout
from jobs.recovery import Recovery
from jobs.settings import JobsSettings, jobs_settings_of
from webapp import extensions
from webapp.db import DbSession, utcnow
from webapp.outbox.models import ENQUEUED, PENDING, OutboxMessage
from webapp.webhooks import lanes
from webapp.webhooks.fanout import fan_out_pending
from webapp.webhooks.service import TEMPLATE as WEBHOOK_TEMPLATE

log = logging.getLogger(__name__)

CHUNK = 500
WAITING = {JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED}
FINAL_FAILURES = {JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}


@dataclass
class DispatchReport:
    enqueued: int = 0
    renewed: int = 0
    jobs: int = 0
    error: str | None = None
    full: bool = False  # the pass hit its limit: more rows may be due

    def __str__(self) -> str:
        if self.error:
            return f"dispatch failed: {self.error}"
        return f"enqueued {self.enqueued} messages in {self.jobs} jobs, renewed {self.renewed}"


@dataclass
class _Plan:
    queue: str
    job_id: str
    rows: list[OutboxMessage]
    data: EnqueueData = field(init=False)


def plan_jobs(rows: Sequence[OutboxMessage], settings: JobsSettings) -> list[_Plan]:
    """Group rows into jobs: single messages, or batches of first tries on `low`."""
    plans: list[_Plan] = []
    batch: list[OutboxMessage] = []
    batchable = settings.jobs_max_retries > 0 and settings.jobs_batch_size > 1
    for row in rows:
        if batchable and row.queue == queues.LOW and row.attempts == 0:
            batch.append(row)
            if len(batch) >= settings.jobs_batch_size:
                plans.append(_batch_plan(batch))
                batch = []
        else:
            plans.append(_Plan(row.queue, str(row.id), [row]))
    if batch:
        plans.append(_batch_plan(batch))
    for plan in plans:
        plan.data = _job_data(plan, settings)
    return plans


def _batch_plan(rows: list[OutboxMessage]) -> _Plan:
    if len(rows) == 1:
        return _Plan(rows[0].queue, str(rows[0].id), rows)
    return _Plan(queues.LOW, f"batch-{rows[0].id}", rows)


def _job_data(plan: _Plan, settings: JobsSettings) -> EnqueueData:
    first = plan.rows[0]
    meta = {
        "request_id": first.request_id if len(plan.rows) == 1 else None,
        "request_ids": sorted({r.request_id for r in plan.rows if r.request_id}),
        "trace": first.trace_context if len(plan.rows) == 1 else None,
        "templates": sorted({r.template for r in plan.rows}),
        "queue": plan.queue,
    }
    args: tuple[str] | tuple[list[str]]
    if first.template == WEBHOOK_TEMPLATE:  # on `default`, never batched
        func, args = "jobs.tasks.deliver_webhook", (str(first.id),)
        description = f"webhook {first.recipient} {first.id}"
    elif len(plan.rows) == 1:
        func, args = "jobs.tasks.deliver_email", (str(first.id),)
        description = f"email {first.template} {first.id}"
    else:
        func, args = "jobs.tasks.deliver_batch", ([str(r.id) for r in plan.rows],)
        description = f"email batch of {len(plan.rows)} on {plan.queue}"
    return Queue.prepare_data(
        func,
        args=args,
        timeout=job_timeout(settings, len(plan.rows)),
        result_ttl=queues.RESULT_TTL,
        failure_ttl=queues.FAILURE_TTL,
        description=description,
        job_id=plan.job_id,
        meta=meta,
    )


def dispatch(
    db: DbSession,
    connection: redis.Redis,
    settings: JobsSettings,
    *,
    limit: int = CHUNK,
    only: Sequence[uuid.UUID] | None = None,
    endpoint: str | None = None,
    now: datetime | None = None,
) -> DispatchReport:
    """One pass over due rows (or over the rows `only`, due or not, or over the due webhook
    messages of one `endpoint`); commits its own work. A full pass first fans out the new
    domain events."""
    fanned_out = 0
    if only is None and endpoint is None:
        try:
            fanned_out = fan_out_pending(db, limit=limit)
        except SQLAlchemyError:  # the emails must not wait for it: logged, tried again next pass
            db.rollback()
            log.exception("webhook fan-out failed; the events wait for the next pass")
    now = now or utcnow()
    concurrency = settings.webhook_endpoint_concurrency
    query = select(OutboxMessage).where(OutboxMessage.status.in_((PENDING, ENQUEUED)))
    if only is not None:
        query = query.where(OutboxMessage.id.in_(list(only)))
    else:
        query = query.where(OutboxMessage.available_at <= now, lanes.dispatchable(now, concurrency))
    if endpoint is not None:
        query = query.where(
            OutboxMessage.template == WEBHOOK_TEMPLATE, OutboxMessage.recipient == endpoint
        )
    selected = list(
        db.scalars(
            query.order_by(OutboxMessage.available_at, OutboxMessage.id)
            .limit(limit)
            .with_for_update(skip_locked=True, of=OutboxMessage)
        )
    )
    rows = selected if only is not None else _per_lane(selected, concurrency)
    report = DispatchReport(full=len(selected) >= limit or fanned_out >= limit)
    if not rows:
        db.rollback()
        return report
    lease = timedelta(seconds=settings.jobs_lease)
    # SQLite has no row locks: a job could start before the rows were marked and a late mark
    # would overwrite what the job recorded. There the rows are marked and committed first (a
    # short write transaction, none open across the Redis call) and released if Redis fails.
    claim_first = db.get_bind().dialect.name == "sqlite"
    plans: list[_Plan] = []
    try:
        previous = _rq_jobs(connection, {r.job_id for r in rows if r.job_id})
        waiting = {job_id for job_id, job in previous.items() if _waiting(job)}
        renew = [r for r in rows if r.status == ENQUEUED and r.job_id in waiting]
        send = [r for r in rows if not (r.status == ENQUEUED and r.job_id in waiting)]
        expired = {r.job_id for r in rows if r.status == ENQUEUED}
        lost = [
            job
            for job_id, job in previous.items()
            if (job_id in expired and job_id not in waiting) or _in_failed_registry(job)
        ]
        plans = plan_jobs(send, settings)
        if claim_first:
            before = {row.id: _Before.of(row) for plan in plans for row in plan.rows}
            _mark(renew, plans, now, lease)
            db.commit()
        _enqueue(connection, plans, lost)
    except redis.RedisError as exc:
        db.rollback()
        if claim_first and plans:
            _release(db, plans, before)
        log.warning("outbox dispatch: redis unavailable, messages wait: %s", exc)
        report.error = f"redis unavailable: {exc.__class__.__name__}"
        return report
    if not claim_first:
        _mark(renew, plans, now, lease)
        db.commit()
    report.renewed, report.jobs = len(renew), len(plans)
    report.enqueued = sum(len(plan.rows) for plan in plans)
    if report.enqueued or report.renewed:
        log.info("outbox dispatch: %s", report)
    return report


def _per_lane(rows: list[OutboxMessage], concurrency: int) -> list[OutboxMessage]:
    """At most `concurrency` webhook messages per endpoint in one pass (the lane's slots are
    the hard limit; this keeps a pass from enqueueing what would only be postponed)."""
    taken: dict[str, int] = {}
    kept = []
    for row in rows:
        if row.template == WEBHOOK_TEMPLATE:
            taken[row.recipient] = taken.get(row.recipient, 0) + 1
            if taken[row.recipient] > concurrency:
                continue
        kept.append(row)
    return kept


def _mark(renew: list[OutboxMessage], plans: list[_Plan], now: datetime, lease: timedelta) -> None:
    for row in renew:
        row.available_at = now + lease
    for plan in plans:
        for row in plan.rows:
            row.status = ENQUEUED
            row.job_id = plan.job_id
            row.enqueued_at = now
            row.available_at = now + lease


@dataclass(frozen=True)
class _Before:
    status: str
    job_id: str | None
    enqueued_at: datetime | None
    available_at: datetime

    @classmethod
    def of(cls, row: OutboxMessage) -> _Before:
        return cls(row.status, row.job_id, row.enqueued_at, row.available_at)


def _release(db: DbSession, plans: list[_Plan], before: dict[uuid.UUID, _Before]) -> None:
    """Put claimed rows back as they were, so the next pass takes them at once. A row a job has
    moved on since (Redis failed after enqueueing after all) is left alone."""
    for plan in plans:
        for row in plan.rows:
            was = before[row.id]
            db.execute(
                update(OutboxMessage)
                .where(
                    OutboxMessage.id == row.id,
                    OutboxMessage.status == ENQUEUED,
                    OutboxMessage.job_id == plan.job_id,
                )
                .values(
                    status=was.status,
                    job_id=was.job_id,
                    enqueued_at=was.enqueued_at,
                    available_at=was.available_at,
                )
            )
    db.commit()


def _rq_jobs(connection: redis.Redis, job_ids: set[str]) -> dict[str, Job]:
    ids = sorted(job_ids)
    jobs = Job.fetch_many(ids, connection=connection) if ids else []
    return {job_id: job for job_id, job in zip(ids, jobs, strict=True) if job is not None}


def _waiting(job: Job) -> bool:
    return job.get_status(refresh=False) in WAITING


def _in_failed_registry(job: Job) -> bool:
    # A message sent again must not stay listed as a dead letter (e.g. an abandoned job, or a
    # replayed one). Jobs still running or finished are left alone: deleting a job under a
    # running job confuses RQ, and finished ones expire by themselves.
    return job.get_status(refresh=False) in FINAL_FAILURES


def _enqueue(connection: redis.Redis, plans: list[_Plan], lost: list[Job]) -> None:
    """Delete lost jobs (from the started and failed registries too) and enqueue the new ones,
    in one Redis transaction."""
    with connection.pipeline() as pipe:
        for job in lost:
            job.delete(pipeline=pipe, remove_from_queue=True)
        by_queue: dict[str, list[EnqueueData]] = {}
        for plan in plans:
            by_queue.setdefault(plan.queue, []).append(plan.data)
        for name, datas in by_queue.items():
            queues.queue(name, connection).enqueue_many(datas, pipeline=pipe)
        pipe.execute()


class DispatcherThread(threading.Thread):
    """Runs `dispatch` every `JOBS_DISPATCH_INTERVAL` seconds beside the RQ worker (at once
    again while a pass finds a full chunk). Errors are logged, never fatal: the next pass tries
    again."""

    def __init__(self, app: Flask, connection: redis.Redis) -> None:
        super().__init__(name="outbox-dispatcher", daemon=True)
        self.app = app
        self.connection = connection
        self.recovery = Recovery()  # lost jobs found in seconds, not after their lease
        self._stop_event = threading.Event()

    def run(self) -> None:
        settings = jobs_settings_of(self.app)
        while not self._stop_event.is_set():
            full = False
            with self.app.app_context(), runtime.fork_guard():
                try:
                    self.recovery.check(extensions.db.session, self.connection)
                    full = dispatch(extensions.db.session, self.connection, settings).full
                except Exception:
                    log.exception("outbox dispatch failed; retrying")
                finally:
                    extensions.db.session.remove()
            if not full:
                self._stop_event.wait(settings.jobs_dispatch_interval)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout)
