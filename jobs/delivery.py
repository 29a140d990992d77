"""Delivering outbox messages, exactly once in effect.

For the messages of one job (one, or a batch on `low`):

1. Lock their outbox rows, in id order (this waits for a dispatcher still committing them), and
   leave out those already sent or dead.
2. Claim their delivery records (`jobs.claims`), keyed by each message's idempotency key under a
   unique constraint, all in one commit. A message whose live claim another job holds (it is
   sending this very message right now) is postponed instead of sent; one whose record is `sent`
   is only marked sent. So retried, replayed and duplicated jobs never send twice.
3. Send each over SMTP with no transaction open.
4. Record each delivery and its message as `sent` in one commit, right after its send.

The crash window, between the server's 250 reply (3) and that commit (4), is handled on purpose
in favour of *not losing* the email: the claim stays `sending` until it expires (or the job's
death is noticed, `jobs.recovery`); the message's lease then brings it back and the next job sends
it again, with the same Message-ID, so the rare copy is recognisably the same email. Losing a
password-reset email is the worse failure (the promise is: no email lost). A failed send releases
its claim (`failed`) at once, so retries do not wait; so does a batch cut short (the server gone,
an error, the job's timeout) for the messages it had not tried yet.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import Message
from enum import StrEnum
from typing import Any

import redis
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from jobs import claims, retry
from jobs.emails import Envelope, compose
from jobs.mailer import BreakerOpen, Mailer, Refused, SmtpSession, Unreachable
from jobs.settings import JobsSettings
from observability.context import bound
from observability.metrics import EMAILS
from webapp.config import Settings
from webapp.db import DbSession, utcnow
from webapp.outbox.models import (
    DEAD,
    PENDING,
    SENT,
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


def claim_ttl(settings: JobsSettings) -> float:
    return SEND_ROUND_TRIPS * settings.smtp_timeout


def batch_claim_ttl(settings: JobsSettings, messages: int) -> float:
    """A batch claims all its messages at once: the claims outlive the job that holds them (it
    is stopped at its timeout, and its process killed soon after, see `jobs.supervisor`)."""
    return job_timeout(settings, messages) + 30.0


def job_timeout(settings: JobsSettings, messages: int = 1) -> int:
    """RQ's timeout for a job sending `messages` emails: RQ stops the job there, and the
    supervisor kills its process soon after if it did not stop."""
    return int(claim_ttl(settings) + 30 + (messages - 1) * 2 * settings.smtp_timeout)


@dataclass(frozen=True)
class Policy:
    max_tries: int
    backoff: float
    claim_ttl: float
    unreachable_wait: float

    @classmethod
    def from_settings(cls, settings: JobsSettings) -> Policy:
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


_LEVELS = {
    Result.DEAD: logging.ERROR,
    Result.RETRY: logging.WARNING,
    Result.POSTPONED: logging.WARNING,
    Result.BUSY: logging.WARNING,
    Result.DEFERRED: logging.WARNING,
}


def _log_extra(outcome: Outcome) -> dict[str, Any]:
    return {
        "message_id": str(outcome.message_id),
        "template": outcome.template,
        "detail": outcome.detail or None,
    }


class DeliveryFailed(Exception):
    """Raised from a job whose message failed its last try: RQ files the job as failed."""


@dataclass(frozen=True)
class _Ready:
    """A claimed message, copied out of its row: what its send and its record need."""

    message_id: uuid.UUID
    template: str
    attempts: int
    key: str
    request_id: str | None
    stored_payload: dict[str, Any]
    email: Message | None  # None: it could not be rendered

    @classmethod
    def of(cls, message: OutboxMessage, email: Message | None) -> _Ready:
        return cls(
            message.id,
            message.template,
            message.attempts,
            message.idempotency_key,
            message.request_id,
            dict(message.payload),
            email,
        )


class Deliverer:
    """Delivers outbox messages with one SMTP session. `batch=True` (the `low` batches) never
    dead-letters: a batch holds first tries only, and a last try always runs as its own job, so
    that every dead message is also one failed job in RQ's registry."""

    def __init__(
        self,
        db: DbSession,
        mailer: Mailer,
        settings: Settings,
        jobs_settings: JobsSettings,
        *,
        batch: bool = False,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.mailer = mailer
        self.settings, self.jobs_settings = settings, jobs_settings
        self.policy = Policy.from_settings(jobs_settings)
        self.batch = batch
        self.clock = clock

    def deliver(self, message_ids: Sequence[uuid.UUID]) -> list[Outcome]:
        ids = list(dict.fromkeys(message_ids))
        outcomes: dict[uuid.UUID, Outcome] = {}
        with self.mailer.kept_session() as session:
            ready = self._prepare(ids, outcomes)
            untried = list(ready)
            try:
                while untried:
                    item = untried.pop(0)
                    outcome = self._send(session, item)
                    self._report(outcome, item.request_id)
                    outcomes[item.message_id] = outcome
                    if outcome.result is Result.POSTPONED:
                        # The server is away: the rest of the batch waits too, without trying.
                        for rest in self._postpone_unsent(untried, outcome.detail):
                            outcomes[rest.message_id] = rest
                        untried = []
            finally:
                if untried:  # cut short (an error, the job's timeout): free what was not tried
                    self._free_untried(untried)
        return [outcomes[m] for m in ids]

    # --- before sending: lock, render, claim ------------------------------------------------

    def _prepare(self, ids: list[uuid.UUID], outcomes: dict[uuid.UUID, Outcome]) -> list[_Ready]:
        """Lock, render and claim the job's messages in one transaction; decided outcomes go
        into `outcomes`, the messages to send come back."""
        try:
            rows = {
                row.id: row
                for row in self.db.scalars(
                    select(OutboxMessage)
                    .where(OutboxMessage.id.in_(ids))
                    .order_by(OutboxMessage.id)
                    .with_for_update()
                )
            }
        except BEFORE_ATTEMPT_ERRORS as exc:
            for message_id in ids:
                outcome = self._retry_later(message_id, None, f"cannot read the message: {exc!r}")
                self._report(outcome, None)
                outcomes[message_id] = outcome
            return []
        candidates: list[tuple[OutboxMessage, Message]] = []
        unrenderable: list[tuple[_Ready, str]] = []
        for message_id in ids:
            message = rows.get(message_id)
            if message is None:
                outcomes[message_id] = Outcome(message_id, Result.SKIPPED, detail="no such message")
            elif message.status in (SENT, DEAD):
                outcome = (
                    Outcome(message_id, Result.DUPLICATE, message.template, "already sent")
                    if message.status == SENT
                    else Outcome(message_id, Result.SKIPPED, message.template, "dead letter")
                )
                self._report(outcome, message.request_id)
                outcomes[message_id] = outcome
            else:
                try:
                    # Secrets are opened here, in memory, and live only as long as this send.
                    envelope = Envelope(
                        template=message.template,
                        recipient=message.recipient,
                        idempotency_key=message.idempotency_key,
                        payload=open_payload(dict(message.payload), message_id),
                    )
                    composed = compose(envelope, self.settings, self.jobs_settings)
                    candidates.append((message, composed))
                except Exception as exc:  # noqa: BLE001 - a template or payload error spends a try
                    unrenderable.append((_Ready.of(message, None), f"cannot render: {exc!r}"))
        ready = self._claim(candidates, outcomes)
        for item, reason in unrenderable:
            outcome = self._failed_try(
                item.message_id, item.template, item.attempts, reason, item.stored_payload
            )
            self._report(outcome, item.request_id)
            outcomes[item.message_id] = outcome
        return ready

    def _claim(
        self,
        candidates: list[tuple[OutboxMessage, Message]],
        outcomes: dict[uuid.UUID, Outcome],
    ) -> list[_Ready]:
        if not candidates:
            self.db.rollback()
            return []
        now = self.clock()
        ttl = (
            self.policy.claim_ttl
            if len(candidates) == 1
            else batch_claim_ttl(self.jobs_settings, len(candidates))
        )
        copies = {message.id: _Ready.of(message, email) for message, email in candidates}
        wanted = [claims.Wanted(message, email["Message-ID"]) for message, email in candidates]
        try:
            decisions = claims.claim_all(self.db, wanted, now, ttl)
            self.db.commit()
        except (IntegrityError, *BEFORE_ATTEMPT_ERRORS) as exc:
            # Nothing was claimed (one commit): the claims stay the authority. A concurrent
            # job that inserted the same claim first makes this one wait, as any failure does.
            self.db.rollback()
            for copy in copies.values():
                outcome = self._retry_later(
                    copy.message_id, copy.template, f"cannot claim: {exc!r}"
                )
                self._report(outcome, copy.request_id)
                outcomes[copy.message_id] = outcome
            return []
        ready: list[_Ready] = []
        for message_id, decision in decisions.items():
            copy = copies[message_id]
            if decision == claims.CLAIMED:
                ready.append(copy)
                continue
            if decision == claims.ALREADY_SENT:
                outcome = Outcome(message_id, Result.DUPLICATE, copy.template, "already sent")
            else:
                assert isinstance(decision, datetime)
                self._postpone(message_id, decision, "another worker is sending this message")
                outcome = Outcome(
                    message_id, Result.BUSY, copy.template, "claimed by another worker"
                )
            self._report(outcome, copy.request_id)
            outcomes[message_id] = outcome
        return ready

    # --- sending one message ----------------------------------------------------------------

    def _send(self, session: SmtpSession, item: _Ready) -> Outcome:
        message_id, template = item.message_id, item.template
        assert item.email is not None
        try:
            reply = session.send(item.email)
        except (BreakerOpen, Unreachable) as exc:
            wait = self.policy.unreachable_wait * random.uniform(1.0, 1.2)  # noqa: S311
            claims.release(self.db, [item.key], str(exc))
            self._postpone(message_id, self.clock() + timedelta(seconds=wait), str(exc))
            return Outcome(message_id, Result.POSTPONED, template, str(exc))
        except Refused as exc:
            claims.release(self.db, [item.key], str(exc))
            reason = f"refused: {exc}"
            return self._failed_try(
                message_id, template, item.attempts, reason, item.stored_payload
            )
        except Exception as exc:  # noqa: BLE001 - e.g. the job timeout: a failed try
            claims.release(self.db, [item.key], repr(exc))
            reason = f"send failed: {exc!r}"
            return self._failed_try(
                message_id, template, item.attempts, reason, item.stored_payload
            )
        self._record_sent(item, reply)
        return Outcome(message_id, Result.SENT, template, reply)

    def _spend_try(self, item: _Ready, reason: str, claim_note: str) -> Outcome:
        claims.release(self.db, [item.key], claim_note)
        return self._failed_try(
            item.message_id, item.template, item.attempts, reason, item.stored_payload
        )

    def _record_sent(self, item: _Ready, reply: str) -> None:
        """Sent: record it, retrying briefly through a database blip (the send cannot be undone;
        if recording fails for good, the claim expires and the email is sent again). The stored
        payload loses its secrets: the outbox table (and its backups) need not keep them."""
        payload = scrubbed(item.stored_payload)
        for delay in (*RECORD_RETRY_DELAYS, None):
            try:
                claims.record_sent(self.db, item.message_id, item.key, payload, reply, self.clock())
                return
            except OperationalError:
                self.db.rollback()
                if delay is None:
                    raise
                log.warning("could not record a sent email yet; retrying", exc_info=True)
                time.sleep(delay)

    def _report(self, outcome: Outcome, request_id: str | None) -> None:
        """One log line and one count per message, under the request id that wrote it."""
        level = _LEVELS.get(outcome.result, logging.INFO)
        with bound(request_id=request_id):
            log.log(level, "email %s", outcome.result.value, extra=_log_extra(outcome))
        if outcome.template and outcome.result is not Result.SKIPPED:
            EMAILS.labels(template=outcome.template, result=outcome.result.value).inc()

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

    def _postpone_unsent(self, untried: list[_Ready], reason: str) -> list[Outcome]:
        """The server went away mid-batch: free the claims of the messages not tried yet and
        bring them back after the breaker's wait, without spending their tries."""
        wait = self.policy.unreachable_wait
        claims.release(self.db, [item.key for item in untried], reason)
        outcomes = []
        for item in untried:
            until = self.clock() + timedelta(seconds=wait * random.uniform(1.0, 1.2))  # noqa: S311
            self._postpone(item.message_id, until, reason)
            outcome = Outcome(item.message_id, Result.POSTPONED, item.template, reason)
            self._report(outcome, item.request_id)
            outcomes.append(outcome)
        return outcomes

    def _free_untried(self, untried: list[_Ready]) -> None:
        """A batch cut short by an exception: its untried messages are due again at once, their
        claims free (they were never sent). Best effort: the lease and the claims' expiry
        remain."""
        reason = "the job ended before this message was tried"
        try:
            self.db.rollback()
            claims.release(self.db, [item.key for item in untried], reason)
            now = self.clock()
            for item in untried:
                self._postpone(item.message_id, now, reason)
        except Exception:
            self.db.rollback()
            log.warning("could not free the untried messages of a batch", exc_info=True)

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
