"""Dead letters: messages that failed their last try, and putting them back.

The database is the authority: a dead message has `status='dead'` in the outbox, and its job
(id = the message id) sits in RQ's failed-job registry with the reason. Replay works from the
database, so it still works after Redis lost the registry; it clears the job from the registry
when Redis still has it. A replayed message starts over with a full set of tries and is
enqueued at once when Redis is reachable (otherwise the dispatcher enqueues it when it is back).
Its delivery record still guards it: a message is never sent twice, replayed or not.

A dead verification or reset email keeps no token (see docs/jobs.md): its replay mints a fresh
one (`webapp.outbox.service.prepare_replay`), or refuses when the email has no point any more.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from rq.job import Job
from sqlalchemy import select, update

from jobs.dispatcher import dispatch
from jobs.settings import JobsSettings
from webapp.db import DbSession, utcnow
from webapp.errors import Conflict, NotFound
from webapp.outbox import service as outbox
from webapp.outbox.models import DEAD, PENDING, OutboxMessage
from webapp.paging import Page, paginate

REPLAY_CHUNK = 200


@dataclass(frozen=True)
class DeadLetter:
    id: uuid.UUID
    queue: str
    template: str
    recipient: str
    attempts: int
    last_error: str | None
    request_id: str | None
    created_at: datetime
    dead_at: datetime | None
    # True/False: whether RQ's failed registry still holds the job; None: Redis unreachable.
    in_failed_registry: bool | None


@dataclass(frozen=True)
class Requeued:
    id: uuid.UUID
    status: str  # "enqueued", or "pending" when Redis was unreachable


def list_dead(
    db: DbSession,
    connection: redis.Redis | None,
    *,
    limit: int,
    cursor: str | None = None,
    offset: int | None = None,
    sort: str | None = None,
    queue: str | None = None,
    template: str | None = None,
) -> Page:
    query = select(OutboxMessage).where(OutboxMessage.status == DEAD)
    if queue:
        query = query.where(OutboxMessage.queue == queue)
    if template:
        query = query.where(OutboxMessage.template == template)
    page = paginate(
        db,
        query,
        id_column=OutboxMessage.id,
        sort_columns={"dead_at": OutboxMessage.dead_at, "created_at": OutboxMessage.created_at},
        sort=sort,
        default_sort="-dead_at",
        limit=limit,
        cursor=cursor,
        offset=offset,
    )
    failed = _failed_job_ids(connection, [str(row.id) for row in page.items])
    items = [
        DeadLetter(
            id=row.id,
            queue=row.queue,
            template=row.template,
            recipient=row.recipient,
            attempts=row.attempts,
            last_error=row.last_error,
            request_id=row.request_id,
            created_at=row.created_at,
            dead_at=row.dead_at,
            in_failed_registry=None if failed is None else str(row.id) in failed,
        )
        for row in page.items
    ]
    return Page(
        items=items, next_cursor=page.next_cursor, total=page.total, next_params=page.next_params
    )


def _failed_job_ids(connection: redis.Redis | None, job_ids: list[str]) -> set[str] | None:
    if connection is None:
        return None
    if not job_ids:
        return set()
    try:
        jobs = Job.fetch_many(job_ids, connection=connection)
        return {job.id for job in jobs if job is not None and job.is_failed}
    except redis.RedisError:
        return None


def requeue(
    db: DbSession,
    connection: redis.Redis | None,
    settings: JobsSettings,
    message_id: uuid.UUID,
) -> Requeued:
    message = db.scalar(
        select(OutboxMessage).where(OutboxMessage.id == message_id).with_for_update()
    )
    if message is None:
        db.rollback()
        raise NotFound("No failed job with this id.")
    if message.status != DEAD:
        status = message.status
        db.rollback()
        raise Conflict(
            f"This job has not failed (its message is {status}); only dead letters are requeued.",
            slug="job-not-failed",
        )
    try:
        outbox.prepare_replay(db, message)
    except outbox.NotReplayable as exc:
        db.rollback()
        raise Conflict(
            f"This failed job cannot be replayed: {exc}.", slug="job-not-replayable"
        ) from None
    _revive(db, [message_id])
    db.commit()
    return Requeued(message_id, _enqueue_now(db, connection, settings, [message_id]))


def requeue_all(db: DbSession, connection: redis.Redis | None, settings: JobsSettings) -> int:
    """Replay every dead letter, chunk by chunk; returns how many. Those that cannot be
    replayed stay dead, the reason in `last_error`."""
    total = 0
    kept: list[uuid.UUID] = []
    while True:
        messages = list(
            db.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.status == DEAD, OutboxMessage.id.not_in(kept))
                .order_by(OutboxMessage.dead_at, OutboxMessage.id)
                .limit(REPLAY_CHUNK)
                .with_for_update(skip_locked=True)
            )
        )
        if not messages:
            db.rollback()
            return total
        ids = []
        for message in messages:
            try:
                outbox.prepare_replay(db, message)
            except outbox.NotReplayable as exc:
                message.last_error = f"not replayed: {exc}"
                kept.append(message.id)
            else:
                ids.append(message.id)
        _revive(db, ids)
        db.commit()
        if ids:
            _enqueue_now(db, connection, settings, ids)
        total += len(ids)


def _revive(db: DbSession, message_ids: list[uuid.UUID]) -> None:
    now = utcnow()
    db.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(message_ids), OutboxMessage.status == DEAD)
        .values(status=PENDING, attempts=0, dead_at=None, available_at=now)
    )


def _enqueue_now(
    db: DbSession,
    connection: redis.Redis | None,
    settings: JobsSettings,
    message_ids: list[uuid.UUID],
) -> str:
    if connection is None:
        return PENDING
    report = dispatch(db, connection, settings, only=message_ids, limit=len(message_ids))
    return PENDING if report.error else "enqueued"


def as_dict(item: DeadLetter | Requeued) -> dict[str, Any]:
    return dict(item.__dict__)
