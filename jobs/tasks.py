"""The RQ job functions. They take message ids only: the outbox row is the job's real input.

`deliver_email` raises `DeliveryFailed` after a message's last try, so RQ files the job in its
failed-job registry (the dead-letter queue) with the reason; every other outcome (sent, already
sent, retry scheduled, postponed) is a finished job, because the outbox row, not RQ, schedules
what happens next.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rq import get_current_job

from jobs import queues, runtime
from jobs.delivery import Deliverer, DeliveryFailed, Outcome, Result
from jobs.dispatcher import dispatch
from jobs.mailer import Mailer, SmtpConfig, breaker_for
from jobs.settings import JobsSettings, current_jobs_settings
from observability.context import bound
from observability.metrics import JOBS
from observability.tracing import job_span
from webapp.config import Settings, current_settings
from webapp.extensions import db
from webapp.webhooks import delivery as webhook_delivery

log = logging.getLogger(__name__)

_JOB_STATES = {
    Result.SENT: "finished",
    Result.DUPLICATE: "finished",
    Result.SKIPPED: "finished",
    Result.RETRY: "retried",
    Result.DEFERRED: "postponed",
    Result.BUSY: "postponed",
    Result.POSTPONED: "postponed",
    Result.DEAD: "dead",
}


@functools.lru_cache(maxsize=8)
def mailer_for(settings: Settings, jobs_settings: JobsSettings) -> Mailer:
    """One mailer (breaker, Redis connection, kept SMTP connection) per settings and process
    lifetime: a job process sends every job's emails through it."""
    connection = queues.connect(settings.redis_url) if settings.redis_url else None
    return Mailer(SmtpConfig.from_settings(jobs_settings), breaker_for(jobs_settings, connection))


@contextmanager
def _job_scope(name: str) -> Iterator[dict[str, Any]]:
    job = get_current_job()
    meta: dict[str, Any] = dict(job.meta) if job is not None else {}
    app = runtime.app()
    with (
        app.app_context(),
        bound(request_id=meta.get("request_id")),
        job_span(name, meta.get("trace"), **{"messaging.message.id": job.id if job else ""}),
    ):
        try:
            yield meta
        finally:
            db.session.remove()


def _queue_of(meta: dict[str, Any]) -> str:
    job = get_current_job()
    return (job.origin if job is not None else None) or meta.get("queue") or "default"


def deliver_email(message_id: str) -> str:
    """Send one outbox message (its last try always runs here, never in a batch)."""
    with _job_scope("email.deliver") as meta:
        settings, jobs_settings = current_settings(), current_jobs_settings()
        deliverer = Deliverer(
            db.session, mailer_for(settings, jobs_settings), settings, jobs_settings
        )
        [outcome] = deliverer.deliver([uuid.UUID(message_id)])
        JOBS.labels(queue=_queue_of(meta), state=_JOB_STATES[outcome.result]).inc()
        if outcome.result is Result.DEAD:
            raise DeliveryFailed(
                f"{outcome.template} email {message_id} failed its last try: {outcome.detail}"
            )
        return outcome.result.value


def deliver_batch(message_ids: list[str]) -> dict[str, int]:
    """Send a chunk of `low` messages over one SMTP connection; returns counts by result."""
    with _job_scope("email.deliver_batch") as meta:
        settings, jobs_settings = current_settings(), current_jobs_settings()
        deliverer = Deliverer(
            db.session, mailer_for(settings, jobs_settings), settings, jobs_settings, batch=True
        )
        outcomes: list[Outcome] = deliverer.deliver([uuid.UUID(m) for m in message_ids])
        counts = Counter(outcome.result.value for outcome in outcomes)
        state = "postponed" if counts.get(Result.POSTPONED.value) else "finished"
        JOBS.labels(queue=_queue_of(meta), state=state).inc()
        log.info("email batch done", extra={"messages": len(message_ids), **counts})
        return dict(counts)


_WEBHOOK_STATES = {
    webhook_delivery.Result.SENT: "finished",
    webhook_delivery.Result.DUPLICATE: "finished",
    webhook_delivery.Result.SKIPPED: "finished",
    webhook_delivery.Result.GONE: "finished",
    webhook_delivery.Result.DISABLED: "finished",
    webhook_delivery.Result.BUSY: "postponed",
    webhook_delivery.Result.WAITING: "postponed",
    webhook_delivery.Result.RETRY: "retried",
    webhook_delivery.Result.DEAD: "dead",
}


def deliver_webhook(message_id: str) -> str:
    """POST one (event, endpoint) outbox message, signed; raises after its last try (a dead
    letter in the failed-job registry, like an email's). Then hands the endpoint's lane on: its
    next due message is enqueued now rather than at the dispatcher's next pass."""
    with _job_scope("webhook.deliver") as meta:
        jobs_settings = current_jobs_settings()
        outcome = webhook_delivery.deliver(
            db.session,
            uuid.UUID(message_id),
            allow_private=current_settings().webhook_allow_private,
            concurrency=jobs_settings.webhook_endpoint_concurrency,
            disable_after=jobs_settings.webhook_disable_after,
        )
        JOBS.labels(queue=_queue_of(meta), state=_WEBHOOK_STATES[outcome.result]).inc()
        if outcome.endpoint_id is not None:
            _hand_on(outcome.endpoint_id, jobs_settings)
        if outcome.result is webhook_delivery.Result.DEAD:
            raise DeliveryFailed(f"webhook {message_id} failed its last try: {outcome.detail}")
        return str(outcome.result.value)


def _hand_on(endpoint_id: uuid.UUID, jobs_settings: JobsSettings) -> None:
    """Enqueue what the endpoint's lane lets go now. Best effort: the dispatcher's next pass
    does the same."""
    job = get_current_job()
    if job is None:
        return
    try:
        dispatch(db.session, job.connection, jobs_settings, endpoint=str(endpoint_id))
    except Exception:  # the delivery is recorded; the dispatcher's next pass takes over
        db.session.rollback()
        log.warning("could not hand the webhook lane on", exc_info=True)
