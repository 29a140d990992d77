"""Background jobs in the tests: the outbox as a worker sees it, messages written as a request
would, jobs dispatched and run in-process on the test Redis, and settings that retry in
milliseconds."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
import redis
from flask import Flask
from sqlalchemy import select

from jobs.settings import jobs_settings_of
from tests.support.smtp import SmtpSink
from webapp.config import settings_of
from webapp.extensions import db
from webapp.outbox.models import OutboxMessage


@pytest.fixture
def outbox(app: Flask) -> Callable[..., list[OutboxMessage]]:
    """The outbox messages written so far (optionally of one template), oldest first, their
    payloads opened (secret fields decrypted, as a worker sees them; the rows stay untouched)."""
    from webapp.outbox.sealing import open_payload

    def read(template: str | None = None, recipient: str | None = None) -> list[OutboxMessage]:
        with app.app_context():
            query = select(OutboxMessage).order_by(OutboxMessage.created_at)
            if template:
                query = query.where(OutboxMessage.template == template)
            if recipient:
                query = query.where(OutboxMessage.recipient == recipient)
            rows = list(db.session.scalars(query))
            db.session.expunge_all()
            for row in rows:
                row.payload = open_payload(row.payload, row.id)
            db.session.remove()
            return rows

    return read


FAST_JOBS = {
    "smtp_timeout": 5.0,
    "jobs_retry_backoff": 0.01,
    "jobs_max_retries": 2,
    "jobs_dispatch_interval": 0.05,
    "smtp_breaker_reset_timeout": 0.5,
}


@pytest.fixture
def jobs_app(app: Flask, make_app: Callable[..., Flask], smtp_sink: SmtpSink) -> Iterator[Flask]:
    """The app (on the migrated test database), sending through `smtp_sink`, with retries in
    milliseconds."""
    application = make_app(smtp_url=smtp_sink.url, **FAST_JOBS)
    yield application
    with application.app_context():
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()


@pytest.fixture
def rq_connection(redis_url: str) -> redis.Redis:
    """RQ's Redis: the test process's own database, never db 0."""
    from jobs import queues

    return queues.connect(redis_url)


@pytest.fixture
def work_jobs() -> Callable[..., int]:
    """Dispatch and run jobs in-process (RQ's SimpleWorker, burst) on the app's Redis until the
    outbox has nothing due or in flight, or `timeout` passes; returns how many passes ran."""
    import signal
    import time

    from sqlalchemy import func

    from jobs import queues, runtime
    from jobs.dispatcher import dispatch
    from jobs.worker import build_worker
    from webapp.outbox.models import ENQUEUED, PENDING

    def run(application: Flask, timeout: float = 40.0, until_idle: bool = True) -> int:
        settings, jobs_settings = settings_of(application), jobs_settings_of(application)
        runtime.bind_app(application)
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        deadline = time.monotonic() + timeout
        passes = 0
        try:
            while True:
                passes += 1
                with application.app_context():
                    dispatch(db.session, queues.connect(settings.redis_url), jobs_settings)
                    db.session.remove()
                build_worker(settings).work(burst=True)
                with application.app_context():
                    open_rows = db.session.scalar(
                        select(func.count())
                        .select_from(OutboxMessage)
                        .where(OutboxMessage.status.in_((PENDING, ENQUEUED)))
                    )
                    db.session.remove()
                if not until_idle or not open_rows or time.monotonic() > deadline:
                    return passes
                time.sleep(0.02)
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)

    return run


EMAIL_PAYLOADS: dict[str, dict[str, Any]] = {
    "verify_email": {
        "name": "Ada",
        "token": "tok-verify",
        "link": "https://gatehouse.test/verify-email?token=tok-verify",
        "expires_at": "2030-01-01T00:00:00+00:00",
    },
    "password_reset": {
        "name": "Ada",
        "token": "tok-reset",
        "link": "https://gatehouse.test/reset-password?token=tok-reset",
        "expires_at": "2030-01-01T00:00:00+00:00",
    },
    "new_login": {
        "name": "Ada",
        "ip": "203.0.113.7",
        "user_agent": "Test Browser",
        "at": "2030-01-01T00:00:00+00:00",
        "link": "https://gatehouse.test/sessions",
    },
    "welcome": {"name": "Ada", "link": "https://gatehouse.test"},
    "email_change": {
        "name": "Ada",
        "token": "tok-change",
        "link": "https://gatehouse.test/verify-email?token=tok-change",
        "expires_at": "2030-01-01T00:00:00+00:00",
    },
}


@pytest.fixture
def queue_email(app: Flask) -> Callable[..., uuid.UUID]:
    """Write one message to the outbox, as a request would (committed); returns its id."""
    from webapp.context import Origin
    from webapp.outbox import service as outbox_service

    def write(
        template: str = "verify_email",
        *,
        recipient: str | None = None,
        request_id: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> uuid.UUID:
        with app.app_context():
            message = outbox_service.enqueue(
                db.session,
                Origin(request_id=request_id),
                template=template,
                recipient=recipient or f"{uuid.uuid4().hex[:8]}@example.com",
                idempotency_key=f"test:{uuid.uuid4()}",
                payload=payload if payload is not None else dict(EMAIL_PAYLOADS[template]),
            )
            db.session.commit()
            message_id = message.id
            db.session.remove()
        return message_id

    return write


@pytest.fixture
def deliver_now() -> Callable[..., Any]:
    """Deliver outbox messages in-process, as a job would; returns the outcome(s)."""
    from jobs.delivery import Deliverer
    from jobs.tasks import mailer_for

    def deliver(application: Flask, message_id: uuid.UUID, *, batch: bool = False) -> Any:
        with application.app_context():
            settings, jobs_settings = settings_of(application), jobs_settings_of(application)
            mailer = mailer_for(settings, jobs_settings)
            deliverer = Deliverer(db.session, mailer, settings, jobs_settings, batch=batch)
            [outcome] = deliverer.deliver([message_id])
            db.session.remove()
            return outcome

    return deliver


def hold_claim(app: Flask, message_id: uuid.UUID, until: datetime) -> None:
    """Another worker's live delivery claim on an outbox message, until `until`."""
    from webapp.outbox.models import SENDING, EmailDelivery, OutboxMessage

    with app.app_context():
        message = db.session.get(OutboxMessage, message_id)
        assert message is not None
        db.session.add(
            EmailDelivery(
                idempotency_key=message.idempotency_key,
                message_id=message_id,
                status=SENDING,
                send_attempts=1,
                claimed_until=until,
                smtp_message_id="<held-elsewhere@gatehouse.local>",
            )
        )
        db.session.commit()
        db.session.remove()
