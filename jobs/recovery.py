"""Noticing lost jobs in seconds instead of waiting for their lease (`JOBS_LEASE`, 5 minutes).

Two faults lose RQ jobs while their messages stay `enqueued` in PostgreSQL:

- **Redis came back empty** (a restart without persistence, a failover to an empty replica).
  `RedisEpoch` remembers the server's `run_id` (INFO server), which changes on every start of
  a server. When it changes — and once when a dispatcher starts, since it cannot know what
  happened before — every `enqueued` message whose job is not in Redis any more has its lease
  ended in one UPDATE, and the dispatcher's next pass enqueues it again.
- **A worker died mid-job** (SIGKILL, a lost node). A worker beats every
  `JOB_MONITORING_INTERVAL` (5 s), also while a job waits on a slow server (a beat thread).
  The sweep (every `SWEEP_INTERVAL`) reads the started-job registries; a started job whose
  newest heartbeat is older than `STALE_AFTER` (or that has none) is orphaned: its messages'
  leases end and their delivery claims are released, so the next job neither waits for the
  lease nor for the claim (`10 x SMTP_TIMEOUT`).

Exactly once in effect still rests on the delivery claim: a lease ended too early only makes
the dispatcher look at the job again (a job still waiting or running is left alone, see
`jobs.dispatcher`). A claim is released only for a job no live job shares a message with, and
only once its worker missed six heartbeats in a row; a slow send keeps beating and is never
touched. A job process dies with its supervisor (`die_with_parent`) and is killed by it once
it stops beating (`jobs.supervisor`), so a silent worker means no job is sending. What remains
is a worker alive but cut off from Redis for `STALE_AFTER` while it still sends: that email may
go out twice, with the same Message-ID, as after a crash between the server's 250 and its
record (docs/jobs.md, "crash window").
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import redis
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.utils import utcparse
from rq.worker import Worker
from sqlalchemy import select, update

from jobs import queues, runtime
from webapp import extensions
from webapp.db import DbSession, aware, utcnow
from webapp.outbox.models import ENQUEUED, SENDING, EmailDelivery, OutboxMessage

log = logging.getLogger(__name__)

JOB_MONITORING_INTERVAL = 5  # seconds between a worker's heartbeats
STALE_AFTER = 6 * JOB_MONITORING_INTERVAL  # six missed heartbeats: the worker is gone
SWEEP_INTERVAL = 5.0  # seconds between two looks at the started-job registries
_IN_CHUNK = 500  # ids per IN (...) list
_T = TypeVar("_T")


@dataclass
class RecoveryReport:
    restarted: bool = False  # Redis' run_id changed (or was first seen)
    lost: int = 0  # messages whose job was not in Redis any more: made due
    orphaned: int = 0  # messages of jobs whose worker died: made due
    released: int = 0  # delivery claims of those jobs released

    def __bool__(self) -> bool:
        return bool(self.lost or self.orphaned or self.released)


class RedisEpoch:
    """The `run_id` of the Redis server last seen: a new one means everything enqueued before
    may be gone."""

    def __init__(self) -> None:
        self.run_id: str | None = None

    def observe(self, connection: redis.Redis) -> str | None:
        """The server's run_id if it differs from the one accepted last, else None."""
        run_id = str(connection.info("server")["run_id"])
        return run_id if run_id != self.run_id else None

    def accept(self, run_id: str) -> None:
        self.run_id = run_id


class Recovery:
    """Called by the dispatcher before each pass; cheap when nothing happened (one INFO, and a
    registry read every `SWEEP_INTERVAL`)."""

    def __init__(
        self, *, stale_after: float = STALE_AFTER, sweep_interval: float = SWEEP_INTERVAL
    ) -> None:
        self.epoch = RedisEpoch()
        self.stale_after = stale_after
        self.sweep_interval = sweep_interval
        self._next_sweep = 0.0

    def check(
        self, db: DbSession, connection: redis.Redis, *, now: datetime | None = None
    ) -> RecoveryReport:
        report = RecoveryReport()
        try:
            run_id = self.epoch.observe(connection)
            if run_id is not None:
                report.restarted = True
                report.lost = release_lost(db, connection, now=now)
                # Accepted only once handled: a failure above retries on the next pass.
                self.epoch.accept(run_id)
            if time.monotonic() >= self._next_sweep:
                report.orphaned, report.released = release_orphans(
                    db, connection, stale_after=self.stale_after, now=now
                )
                self._next_sweep = time.monotonic() + self.sweep_interval
        except redis.RedisError as exc:
            db.rollback()
            log.warning("job recovery: redis unavailable: %s", exc.__class__.__name__)
            return report
        if report:
            log.warning(
                "job recovery: lost jobs found, their messages are due now",
                extra={
                    "redis_restarted": report.restarted,
                    "lost": report.lost,
                    "orphaned": report.orphaned,
                    "claims_released": report.released,
                },
            )
        return report


def release_lost(db: DbSession, connection: redis.Redis, *, now: datetime | None = None) -> int:
    """End the lease of every `enqueued` message whose job is not in Redis; returns how many."""
    now = now or utcnow()
    job_ids: list[str] = sorted(
        {
            job_id
            for job_id in db.scalars(
                select(OutboxMessage.job_id).where(
                    OutboxMessage.status == ENQUEUED,
                    OutboxMessage.available_at > now,
                    OutboxMessage.job_id.is_not(None),
                )
            )
            if job_id
        }
    )
    db.rollback()
    if not job_ids:
        return 0
    with connection.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.exists(Job.key_for(job_id))
        present = pipe.execute()
    gone = [job_id for job_id, exists in zip(job_ids, present, strict=True) if not exists]
    count = 0
    for chunk in _chunks(gone):
        result = db.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.status == ENQUEUED,
                OutboxMessage.job_id.in_(chunk),
                OutboxMessage.available_at > now,
            )
            .values(available_at=now)
        )
        count += getattr(result, "rowcount", 0) or 0
    db.commit()
    return count


def release_orphans(
    db: DbSession,
    connection: redis.Redis,
    *,
    stale_after: float = STALE_AFTER,
    now: datetime | None = None,
) -> tuple[int, int]:
    """Make the messages of started jobs whose worker stopped beating due, and release their
    delivery claims; returns (messages, claims)."""
    now = now or utcnow()
    started = started_jobs(connection)
    if not started:
        return 0, 0
    beats = _worker_heartbeats(connection, {job.worker_name for job in started if job.worker_name})
    limit = now - timedelta(seconds=stale_after)
    dead: list[Job] = []
    live: list[Job] = []
    for job in started:
        last = _newest(job.last_heartbeat, beats.get(job.worker_name or ""))
        (dead if last is None or last < limit else live).append(job)
    if not dead:
        return 0, 0
    # A message a live job also carries (a duplicate in transit) keeps its claim: that job may
    # be sending it right now.
    busy = {m for job in live for m in _messages(job)}
    orphans = sorted({m for job in dead for m in _messages(job)} - busy)
    messages, claims = _release(db, [job.id for job in dead], orphans, now)
    if messages or claims:
        log.warning(
            "job recovery: worker stopped beating mid-job",
            extra={
                "jobs": [job.id for job in dead],
                "workers": sorted({job.worker_name or "" for job in dead}),
            },
        )
    return messages, claims


def release_killed(job: Job, connection: redis.Redis) -> None:
    """In the supervisor, once it saw the job process running `job` die (SIGKILL, OOM kill): nothing
    sends these messages any more, so they are due now, their claims free — unless another
    started job carries one of them too. Never raises: the worker goes on, the lease is the
    fallback."""
    try:
        others = {
            m for other in started_jobs(connection) if other.id != job.id for m in _messages(other)
        }
        mine = sorted(set(_messages(job)) - others)
        with runtime.app().app_context():
            try:
                released = _release(extensions.db.session, [job.id], mine, utcnow())
            finally:
                extensions.db.session.remove()
    except Exception:  # a database or Redis blip must not take the worker down
        log.exception("job recovery: could not release the messages of a killed job process")
        return
    log.warning(
        "job recovery: job process killed mid-job, its messages are due now",
        extra={"job": job.id, "messages": released[0], "claims_released": released[1]},
    )


def _release(
    db: DbSession, job_ids: list[str], message_ids: list[uuid.UUID], now: datetime
) -> tuple[int, int]:
    """End the lease of `message_ids` still enqueued with one of `job_ids`, and release their
    live claims; returns (messages, claims)."""
    messages = claims = 0
    for chunk in _chunks(message_ids):
        result = db.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.id.in_(chunk),
                OutboxMessage.status == ENQUEUED,
                OutboxMessage.job_id.in_(job_ids),
                OutboxMessage.available_at > now,
            )
            .values(available_at=now)
        )
        messages += getattr(result, "rowcount", 0) or 0
        result = db.execute(
            update(EmailDelivery)
            .where(
                EmailDelivery.message_id.in_(chunk),
                EmailDelivery.status == SENDING,
                EmailDelivery.claimed_until > now,
            )
            .values(claimed_until=now)
        )
        claims += getattr(result, "rowcount", 0) or 0
    db.commit()
    return messages, claims


def started_jobs(connection: redis.Redis) -> list[Job]:
    """The jobs RQ lists as running on any queue."""
    ids: set[str] = set()
    for name in queues.QUEUES:
        registry = StartedJobRegistry(name, connection=connection)
        ids.update(registry.get_job_ids(cleanup=False))
    jobs = Job.fetch_many(sorted(ids), connection=connection) if ids else []
    return [
        job
        for job in jobs
        if job is not None and job.get_status(refresh=False) == JobStatus.STARTED
    ]


def _worker_heartbeats(connection: redis.Redis, names: set[str]) -> dict[str, datetime]:
    ordered = sorted(names)
    with connection.pipeline(transaction=False) as pipe:
        for name in ordered:
            pipe.hget(Worker.redis_worker_namespace_prefix + name, "last_heartbeat")
        values = pipe.execute()
    beats: dict[str, datetime] = {}
    for name, value in zip(ordered, values, strict=True):
        if value:
            beats[name] = aware(utcparse(value.decode()))
    return beats


def _newest(*stamps: datetime | None) -> datetime | None:
    known = [aware(s) for s in stamps if s is not None]
    return max(known) if known else None


def _messages(job: Job) -> list[uuid.UUID]:
    """The outbox message ids a delivery job carries (see `jobs.dispatcher._job_data`)."""
    try:
        [argument] = job.args
        ids = argument if isinstance(argument, list) else [argument]
        return [uuid.UUID(str(i)) for i in ids]
    except Exception:  # noqa: BLE001 - not one of ours, or unreadable: carries nothing we know
        return []


def _chunks(values: list[_T]) -> Iterable[list[_T]]:
    for start in range(0, len(values), _IN_CHUNK):
        yield values[start : start + _IN_CHUNK]


_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int | None) -> None:
    """In a job process: be killed when the supervisor that forked it dies (Linux). It has a
    process group of its own, so a SIGKILL of the supervisor alone would leave it sending with
    nobody watching it, and the sweep would release its claim under it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the claim's own expiry still bounds a resend
        return
    if parent_pid is not None and os.getppid() != parent_pid:  # the worker died before prctl
        os._exit(1)
