"""Email delivery on the embedded default, a SQLite file shared by several processes: the
connection setup, the dispatcher's short claim before its Redis call, and a failure before any
delivery attempt (the database locked) scheduled as a retry instead of waiting for the lease."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import select, text
from sqlalchemy.pool import NullPool

from jobs import queues
from jobs.delivery import Deliverer, Result
from jobs.dispatcher import dispatch
from jobs.settings import jobs_settings_of
from jobs.tasks import mailer_for
from tests.support.jobs import EMAIL_PAYLOADS, FAST_JOBS
from tests.support.smtp import SmtpSink
from tests.support.waiting import free_port
from webapp import sqlite as sqlite_setup
from webapp.config import settings_of
from webapp.context import Origin
from webapp.db import utcnow
from webapp.extensions import db
from webapp.outbox import service as outbox_service
from webapp.outbox.models import ENQUEUED, PENDING, EmailDelivery, OutboxMessage


@pytest.fixture
def lite_path(tmp_path: Path) -> Path:
    return tmp_path / "gatehouse.db"


@pytest.fixture
def lite_app(
    make_app: Callable[..., Flask], lite_path: Path, smtp_sink: SmtpSink
) -> Iterator[Flask]:
    application = make_app(
        database_url=f"sqlite:///{lite_path}",
        smtp_url=smtp_sink.url,
        **{**FAST_JOBS, "jobs_retry_backoff": 10.0},
    )
    with application.app_context():
        upgrade()
    yield application
    with application.app_context():
        db.session.remove()
        db.engine.dispose()


def _queue(application: Flask) -> uuid.UUID:
    with application.app_context():
        message = outbox_service.enqueue(
            db.session,
            Origin(),
            template="verify_email",
            recipient="lite@example.com",
            idempotency_key=f"test:{uuid.uuid4()}",
            payload=dict(EMAIL_PAYLOADS["verify_email"]),
        )
        db.session.commit()
        message_id = message.id
        db.session.remove()
    return message_id


def _row(lite_path: Path, message_id: uuid.UUID) -> dict[str, Any]:
    """The row as another process sees it (a connection of its own, outside SQLAlchemy)."""
    with sqlite3.connect(lite_path) as conn:
        conn.row_factory = sqlite3.Row
        found = conn.execute(
            "SELECT status, job_id, attempts, available_at, last_error FROM outbox_messages "
            "WHERE id = ?",
            (message_id.hex,),
        ).fetchone()
    assert found is not None
    return dict(found)


def test_sqlite_connections_use_wal_a_busy_timeout_and_no_pool(lite_app):
    with lite_app.app_context():
        assert isinstance(db.engine.pool, NullPool)
        assert db.session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        busy = db.session.execute(text("PRAGMA busy_timeout")).scalar()
        assert busy == sqlite_setup.BUSY_TIMEOUT_MS
        db.session.remove()


class _ObservedRedis(redis.Redis):
    """A real Redis client that records how another process sees the outbox row at the moment
    the dispatcher's Redis transaction runs."""

    seen: list[dict[str, Any]]
    look: Callable[[], dict[str, Any]]

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        def observed_execute(*args: Any, **kwargs: Any) -> Any:
            self.seen.append(self.look())
            return execute(*args, **kwargs)

        pipe.execute = observed_execute
        return pipe


def test_on_sqlite_the_dispatcher_commits_its_claim_before_the_job_exists(
    lite_app, lite_path, redis_url
):
    # Without row locks, a job starting before the dispatcher's commit would have its "sent"
    # overwritten by that late commit: the row must already be enqueued when the job appears.
    message_id = _queue(lite_app)
    connection = _ObservedRedis.from_url(redis_url)
    connection.seen = []
    connection.look = lambda: _row(lite_path, message_id)
    settings = jobs_settings_of(lite_app)
    with lite_app.app_context():
        report = dispatch(db.session, connection, settings)
        db.session.remove()
    assert report.enqueued == 1
    [seen] = connection.seen
    assert seen["status"] == ENQUEUED
    assert seen["job_id"] == str(message_id)


def test_on_sqlite_a_claim_is_released_at_once_when_redis_fails(lite_app, lite_path):
    message_id = _queue(lite_app)
    before = _row(lite_path, message_id)
    dead_redis = queues.connect(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=1)
    settings = jobs_settings_of(lite_app)
    with lite_app.app_context():
        report = dispatch(db.session, dead_redis, settings)
        db.session.remove()
    assert report.error is not None
    assert _row(lite_path, message_id) == before  # pending and due: the next pass takes it


def test_a_database_locked_before_the_send_is_retried_with_backoff_not_left_to_the_lease(
    monkeypatch, make_app, lite_path, smtp_sink, redis_url
):
    monkeypatch.setattr(sqlite_setup, "BUSY_TIMEOUT_MS", 300)
    application = make_app(
        database_url=f"sqlite:///{lite_path}",
        smtp_url=smtp_sink.url,
        **{**FAST_JOBS, "jobs_retry_backoff": 10.0},
    )
    with application.app_context():
        upgrade()
    message_id = _queue(application)
    settings, jobs_settings = settings_of(application), jobs_settings_of(application)
    # Another process holds the write lock (a long write transaction) while the job claims, and
    # lets go once the claim has failed, however long the job took to get there.
    holder = sqlite3.connect(lite_path, timeout=0, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    retry_later = Deliverer._retry_later

    def release_then_retry_later(self, *args):
        holder.rollback()
        return retry_later(self, *args)

    monkeypatch.setattr(Deliverer, "_retry_later", release_then_retry_later)
    started = utcnow()
    try:
        with application.app_context():
            mailer = mailer_for(settings, jobs_settings)
            deliverer = Deliverer(db.session, mailer, settings, jobs_settings)
            [outcome] = deliverer.deliver([message_id])
            db.session.remove()
    finally:
        holder.close()
        with application.app_context():
            db.session.remove()
            db.engine.dispose()

    assert outcome.result is Result.DEFERRED
    assert "database is locked" in outcome.detail
    row = _row(lite_path, message_id)
    assert row["status"] == PENDING
    assert row["attempts"] == 0  # never tried: no try spent
    assert "cannot claim" in row["last_error"]
    with application.app_context():
        due = db.session.scalar(select(OutboxMessage.available_at))
        claims = db.session.scalars(select(EmailDelivery)).all()
        db.session.remove()
    # the backoff of a first retry (10 s ± 20 %), far before the 300 s lease
    assert started + timedelta(seconds=7) < due < started + timedelta(seconds=60)
    assert claims == []  # nothing claimed, so nothing stands in the way of the next try
    assert smtp_sink.attempts == 0
    assert smtp_sink.received == []
