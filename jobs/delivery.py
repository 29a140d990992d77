"""Delivering outbox messages, exactly once in effect.

For each message:

1. Lock its outbox row (this waits for a dispatcher still committing it) and skip it if it is
   already sent or dead.
2. Claim its delivery record, keyed by the message's idempotency key under a unique constraint,
   and commit: inserting the record, or taking over a released or expired claim with a
   conditional UPDATE. A job that finds a live claim (another worker is sending this very
   message right now) postpones instead of sending; one that finds the record `sent` only marks
   the outbox row sent. So retried, replayed and duplicated jobs never send twice.
3. Send over SMTP with no transaction open.
4. Record the delivery as `sent` and the message as `sent` in one commit.

The crash window, between the server's 250 reply (3) and that commit (4), is handled on purpose
in favour of *not losing* the email: the claim stays `sending` and expires after
`claim_ttl` (10 x SMTP_TIMEOUT, longer than any send can take); the message's lease then
brings it back and the next job sends it again, with the same Message-ID, so the rare copy is
recognisably the same email. Losing a password-reset email is the worse failure (the promise is: no
email lost). A failed send releases the claim (`failed`) at once, so retries do not wait.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import redis
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from jobs import retry
from jobs.emails import Envelope, compose
from jobs.mailer import BreakerOpen, Mailer, Refused, SmtpSession, Unreachable
from observability.context import bound
from observability.metrics import EMAILS
from webapp.config import Settings
from webapp.db import DbSession, utcnow
from webapp.outbox.models import (
    DEAD,
    DELIVERED,
    FAILED,
    PENDING,
    SENDING,
    SENT,
    EmailDelivery,
    OutboxMessage,
)
from webapp.outbox.sealing import open_payload, scrubbed
from webapp.outbox.service import dead_letter_payload

log = logging.getLogger(__name__)

# A send is at most about this many socket operations (connect, EHLO, STARTTLS, EHLO, AUTH,
# MAIL, RCPT, DATA, end of data), each bounded by SMTP_TIMEOUT.
SEND_ROUND_TRIPS = 10
RECORD_RETRY_DELAYS = (0.2, 1.0, 3.0)
# What can fail before a message is tried: the database (locked, away) and Redis.
BEFORE_ATTEMPT_ERRORS = (OperationalError, redis.RedisError)


def claim_ttl(settings: Settings) -> float:
    return SEND_ROUND_TRIPS * settings.smtp_timeout


def job_timeout(settings: Settings, messages: int = 1) -> int:
    """RQ's timeout for a job sending `messages` emails (the horse is killed past it)."""
    return int(claim_ttl(settings) + 30 + (messages - 1) * 2 * settings.smtp_timeout)


@dataclass(frozen=True)
class Policy:
    max_tries: int
    backoff: float
    claim_ttl: float
    unreachable_wait: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            max_tries=settings.jobs_max_retries + 1,
            backoff=settings.jobs_retry_backoff,
            claim_ttl=claim_ttl(settings),
            unreachable_wait=settings.smtp_breaker_reset_timeout,
        )


class Result(StrEnum):
    SENT = "sent"
    DUPLICATE = "duplicate"  # already sent by an earlier job: nothing sent now
    BUSY = "busy"  # another worker holds the claim: postponed until the claim ends
    POSTPONED = "postponed"  # SMTP unreachable or breaker open: no try spent
    RETRY = "retry"  # refused or failed: a try spent, the next one scheduled
    DEFERRED = "deferred"  # failed before any attempt (database, Redis): retried, no try spent
    DEAD = "dead"  # the last try failed
    SKIPPED = "skipped"  # no such message, or it is dead


@dataclass(frozen=True)
class Outcome:
    message_id: uuid.UUID
    result: Result
    template: str | None = None
    detail: str = ""


def _log_extra(outcome: Outcome) -> dict[str, Any]:
    return {
        "message_id": str(outcome.message_id),
        "template": outcome.template,
        "detail": outcome.detail or None,
    }


class DeliveryFailed(Exception):
    """Raised from a job whose message failed its last try: RQ files the job as failed."""


class Deliverer:
    """Delivers outbox messages with one SMTP session. `batch=True` (the `low` batches) never
    dead-letters: a batch holds first tries only, and a last try always runs as its own job, so
    that every dead message is also one failed job in RQ's registry."""

    def __init__(
        self,
        db: DbSession,
        mailer: Mailer,
        settings: Settings,
        *,
        batch: bool = False,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.mailer = mailer
        self.settings = settings
        self.policy = Policy.from_settings(settings)
        self.batch = batch
        self.clock = clock

    def deliver(self, message_ids: Sequence[uuid.UUID]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        with self.mailer.session() as session:
            for index, message_id in enumerate(message_ids):
                outcome = self._deliver_one(session, message_id)
                outcomes.append(outcome)
                if outcome.result is Result.POSTPONED:
                    # The server is away: the rest of the batch waits too, without trying.
                    rest = message_ids[index + 1 :]
                    outcomes.extend(self._postpone_unsent(rest, outcome.detail))
                    break
        return outcomes

    # --- one message -----------------------------------------------------------------------

    def _deliver_one(self, session: SmtpSession, message_id: uuid.UUID) -> Outcome:
        try:
            message = self.db.scalar(
                select(OutboxMessage).where(OutboxMessage.id == message_id).with_for_update()
            )
        except BEFORE_ATTEMPT_ERRORS as exc:
            outcome = self._retry_later(message_id, None, f"cannot read the message: {exc!r}")
            log.warning("email %s", outcome.result.value, extra=_log_extra(outcome))
            return outcome
        if message is None:
            self.db.rollback()
            return Outcome(message_id, Result.SKIPPED, detail="no such message")
        with bound(request_id=message.request_id):
            outcome = self._deliver_locked(session, message)
            level = logging.ERROR if outcome.result is Result.DEAD else logging.INFO
            if outcome.result in (Result.RETRY, Result.POSTPONED, Result.BUSY):
                level = logging.WARNING
            if outcome.result is Result.DEFERRED:
                level = logging.WARNING
            log.log(level, "email %s", outcome.result.value, extra=_log_extra(outcome))
        if outcome.template and outcome.result is not Result.SKIPPED:
            EMAILS.labels(template=outcome.template, result=outcome.result.value).inc()
        return outcome

    def _deliver_locked(self, session: SmtpSession, message: OutboxMessage) -> Outcome:
        message_id, template, attempts = message.id, message.template, message.attempts
        if message.status == SENT:
            self.db.rollback()
            return Outcome(message_id, Result.DUPLICATE, template, "already sent")
        if message.status == DEAD:
            self.db.rollback()
            return Outcome(message_id, Result.SKIPPED, template, "dead letter")
        stored_payload = dict(message.payload)
        try:
            # Secrets are opened here, in memory, and live only as long as this send.
            envelope = Envelope(
                template=template,
                recipient=message.recipient,
                idempotency_key=message.idempotency_key,
                payload=open_payload(stored_payload, message_id),
            )
            email = compose(envelope, self.settings)
        except Exception as exc:  # noqa: BLE001 - a template or payload error spends a try
            self.db.rollback()
            reason = f"cannot render: {exc!r}"
            return self._failed_try(message_id, template, attempts, reason, stored_payload)

        now = self.clock()
        try:
            claim = self._claim(message, email["Message-ID"], now)
        except BEFORE_ATTEMPT_ERRORS as exc:
            # Nothing was claimed (the claim is one commit): the claim stays the authority.
            return self._retry_later(message_id, template, f"cannot claim: {exc!r}")
        if claim == "sent":
            return Outcome(message_id, Result.DUPLICATE, template, "already sent")
        if isinstance(claim, datetime):
            self._postpone(message_id, claim, "another worker is sending this message")
            return Outcome(message_id, Result.BUSY, template, "claimed by another worker")

        try:
            reply = session.send(email)
        except (BreakerOpen, Unreachable) as exc:
            wait = self.policy.unreachable_wait * random.uniform(1.0, 1.2)  # noqa: S311
            self._release(envelope.idempotency_key, str(exc))
            self._postpone(message_id, self.clock() + timedelta(seconds=wait), str(exc))
            return Outcome(message_id, Result.POSTPONED, template, str(exc))
        except Refused as exc:
            self._release(envelope.idempotency_key, str(exc))
            reason = f"refused: {exc}"
            return self._failed_try(message_id, template, attempts, reason, stored_payload)
        except Exception as exc:  # noqa: BLE001 - e.g. the job timeout: a failed try
            self._release(envelope.idempotency_key, repr(exc))
            reason = f"send failed: {exc!r}"
            return self._failed_try(message_id, template, attempts, reason, stored_payload)

        self._record_sent(message_id, envelope.idempotency_key, scrubbed(stored_payload), reply)
        return Outcome(message_id, Result.SENT, template, reply)

    # --- the delivery record ---------------------------------------------------------------

    def _claim(self, message: OutboxMessage, smtp_message_id: str, now: datetime) -> str | datetime:
        """'claimed', 'sent', or the moment a live claim of another worker ends."""
        key = message.idempotency_key
        until = now + timedelta(seconds=self.policy.claim_ttl)
        existing = self.db.scalar(select(EmailDelivery).where(EmailDelivery.idempotency_key == key))
        if existing is None:
            self.db.add(
                EmailDelivery(
                    idempotency_key=key,
                    message_id=message.id,
                    status=SENDING,
                    send_attempts=1,
                    claimed_until=until,
                    smtp_message_id=smtp_message_id,
                )
            )
            try:
                self.db.commit()
            except IntegrityError:  # a concurrent job inserted it first
                self.db.rollback()
                return until
            return "claimed"
        if existing.status == DELIVERED:
            self.db.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == message.id)
                .values(
                    status=SENT,
                    sent_at=existing.sent_at or now,
                    last_error=None,
                    payload=scrubbed(message.payload),
                )
            )
            self.db.commit()
            return "sent"
        previous_status, previous_until = existing.status, existing.claimed_until
        if previous_status == SENDING and previous_until is not None and previous_until > now:
            self.db.rollback()
            return previous_until
        taken = self.db.execute(
            update(EmailDelivery)
            .where(
                EmailDelivery.idempotency_key == key,
                EmailDelivery.status == previous_status,
                or_(EmailDelivery.claimed_until.is_(None), EmailDelivery.claimed_until <= now),
            )
            .values(
                status=SENDING,
                claimed_until=until,
                send_attempts=EmailDelivery.send_attempts + 1,
                smtp_message_id=smtp_message_id,
            )
        )
        if getattr(taken, "rowcount", 0) != 1:
            self.db.rollback()
            return until
        self.db.commit()
        if previous_status == SENDING:
            log.warning(
                "an earlier send of this email was interrupted before it was recorded; "
                "sending again with the same Message-ID",
                extra={"message_id": str(message.id)},
            )
        return "claimed"

    def _release(self, key: str, reason: str) -> None:
        self.db.execute(
            update(EmailDelivery)
            .where(EmailDelivery.idempotency_key == key, EmailDelivery.status == SENDING)
            .values(status=FAILED, claimed_until=None, smtp_response=reason[:1000])
        )
        # committed together with the outbox row's new state by the caller

    def _record_sent(
        self, message_id: uuid.UUID, key: str, payload: dict[str, Any], reply: str
    ) -> None:
        """Sent: record it, retrying briefly through a database blip (the send cannot be undone;
        if recording fails for good, the claim expires and the email is sent again). The stored
        payload loses its secrets: the outbox table (and its backups) need not keep them."""
        for delay in (*RECORD_RETRY_DELAYS, None):
            now = self.clock()
            try:
                self.db.execute(
                    update(EmailDelivery)
                    .where(EmailDelivery.idempotency_key == key)
                    .values(status=DELIVERED, sent_at=now, claimed_until=None, smtp_response=reply)
                )
                self.db.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.id == message_id)
                    .values(
                        status=SENT, sent_at=now, last_error=None, available_at=now, payload=payload
                    )
                )
                self.db.commit()
                return
            except OperationalError:
                self.db.rollback()
                if delay is None:
                    raise
                log.warning("could not record a sent email yet; retrying", exc_info=True)
                time.sleep(delay)

    # --- the outbox row --------------------------------------------------------------------

    def _retry_later(self, message_id: uuid.UUID, template: str | None, reason: str) -> Outcome:
        """A failure before any delivery attempt (the database locked or away, Redis): the
        message comes back after the backoff of its next try, like a failed send, instead of
        waiting for its lease; no try is spent, since the email was never tried. Scheduling
        retries through a short blip; if it fails for good the lease still brings it back."""
        for delay in (*RECORD_RETRY_DELAYS, None):
            try:
                self.db.rollback()
                attempts = self.db.scalar(
                    select(OutboxMessage.attempts).where(OutboxMessage.id == message_id)
                )
                wait = retry.backoff((attempts or 0) + 1, self.policy.backoff)
                self._postpone(message_id, self.clock() + timedelta(seconds=wait), reason)
                return Outcome(
                    message_id, Result.DEFERRED, template, f"{reason}; next try in {wait:.1f}s"
                )
            except BEFORE_ATTEMPT_ERRORS:
                self.db.rollback()
                if delay is None:
                    raise
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _postpone(self, message_id: uuid.UUID, until: datetime, reason: str) -> None:
        """Back to pending until `until`, without spending a try."""
        self.db.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message_id, OutboxMessage.status.not_in((SENT, DEAD)))
            .values(status=PENDING, available_at=until, last_error=reason[:2000])
        )
        self.db.commit()

    def _postpone_unsent(self, message_ids: Sequence[uuid.UUID], reason: str) -> list[Outcome]:
        wait = self.policy.unreachable_wait
        for message_id in message_ids:
            until = self.clock() + timedelta(seconds=wait * random.uniform(1.0, 1.2))  # noqa: S311
            self._postpone(message_id, until, reason)
        return [Outcome(mid, Result.POSTPONED, None, reason) for mid in message_ids]

    def _failed_try(
        self,
        message_id: uuid.UUID,
        template: str,
        attempts: int,
        reason: str,
        payload: dict[str, Any],
    ) -> Outcome:
        now = self.clock()
        tries = attempts + 1
        reason = reason[:2000]
        if tries >= self.policy.max_tries and not self.batch:
            self.db.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == message_id, OutboxMessage.status != SENT)
                .values(
                    status=DEAD,
                    attempts=tries,
                    dead_at=now,
                    last_error=reason,
                    payload=dead_letter_payload(template, payload),
                )
            )
            self.db.commit()
            return Outcome(message_id, Result.DEAD, template, reason)
        if self.batch:  # keep one try for a job of its own (see the class docstring)
            tries = max(attempts, min(tries, self.policy.max_tries - 1))
        delay = retry.backoff(max(tries, 1), self.policy.backoff)
        self.db.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message_id, OutboxMessage.status.not_in((SENT, DEAD)))
            .values(
                status=PENDING,
                attempts=tries,
                available_at=now + timedelta(seconds=delay),
                last_error=reason,
            )
        )
        self.db.commit()
        return Outcome(message_id, Result.RETRY, template, f"{reason}; next try in {delay:.1f}s")
