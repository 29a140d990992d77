"""Delivery records: the claim that makes a send exclusive, and the proof that it happened.

One `email_deliveries` row per message idempotency key (unique). Claiming inserts it as
`sending` with `claimed_until`, or takes over a released (`failed`) or expired claim with a
conditional UPDATE; a job that finds a live claim of another job postpones instead of sending;
one that finds it `sent` only marks its outbox row sent. `claim_all` claims the messages of a
whole job in one transaction, so a batch of fifty costs one commit, not fifty.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, text, update

from webapp.db import DbSession
from webapp.outbox.models import DELIVERED, FAILED, SENDING, SENT, EmailDelivery, OutboxMessage
from webapp.outbox.sealing import scrubbed

log = logging.getLogger(__name__)

CLAIMED, ALREADY_SENT = "claimed", "sent"


@dataclass(frozen=True)
class Wanted:
    """A message to claim: its locked outbox row and the Message-ID its email carries."""

    message: OutboxMessage
    smtp_message_id: str


def claim_all(
    db: DbSession, wanted: list[Wanted], now: datetime, ttl: float
) -> dict[uuid.UUID, str | datetime]:
    """Claim each message in the open transaction (the caller commits): 'claimed', 'sent'
    (its outbox row is marked sent here too), or the moment another job's live claim ends.
    A concurrent insert of the same key surfaces as IntegrityError at the caller's commit."""
    until = now + timedelta(seconds=ttl)
    keys = [w.message.idempotency_key for w in wanted]
    existing = {
        d.idempotency_key: d
        for d in db.scalars(select(EmailDelivery).where(EmailDelivery.idempotency_key.in_(keys)))
    }
    decisions: dict[uuid.UUID, str | datetime] = {}
    for item in wanted:
        message, record = item.message, existing.get(item.message.idempotency_key)
        if record is None:
            db.add(
                EmailDelivery(
                    idempotency_key=message.idempotency_key,
                    message_id=message.id,
                    status=SENDING,
                    send_attempts=1,
                    claimed_until=until,
                    smtp_message_id=item.smtp_message_id,
                )
            )
            decisions[message.id] = CLAIMED
        elif record.status == DELIVERED:
            message.status, message.sent_at = SENT, record.sent_at or now
            message.last_error, message.payload = None, scrubbed(message.payload)
            decisions[message.id] = ALREADY_SENT
        elif record.status == SENDING and record.claimed_until and record.claimed_until > now:
            decisions[message.id] = record.claimed_until
        else:
            decisions[message.id] = _take_over(db, record, item, now, until)
    return decisions


def _take_over(
    db: DbSession, record: EmailDelivery, item: Wanted, now: datetime, until: datetime
) -> str | datetime:
    """A released or expired claim: take it, unless another job took it first."""
    previous_status = record.status
    taken = db.execute(
        update(EmailDelivery)
        .where(
            EmailDelivery.idempotency_key == record.idempotency_key,
            EmailDelivery.status == previous_status,
            or_(EmailDelivery.claimed_until.is_(None), EmailDelivery.claimed_until <= now),
        )
        .values(
            status=SENDING,
            claimed_until=until,
            send_attempts=EmailDelivery.send_attempts + 1,
            smtp_message_id=item.smtp_message_id,
        )
        .execution_options(synchronize_session=False)
    )
    if getattr(taken, "rowcount", 0) != 1:
        return until
    if previous_status == SENDING:
        log.warning(
            "an earlier send of this email was interrupted before it was recorded; "
            "sending again with the same Message-ID",
            extra={"message_id": str(item.message.id)},
        )
    return CLAIMED


def release(db: DbSession, keys: list[str], reason: str) -> None:
    """Free the claims of sends that failed or never started (the caller commits)."""
    if keys:
        db.execute(
            update(EmailDelivery)
            .where(EmailDelivery.idempotency_key.in_(keys), EmailDelivery.status == SENDING)
            .values(status=FAILED, claimed_until=None, smtp_response=reason[:1000])
            .execution_options(synchronize_session=False)
        )


def record_sent(
    db: DbSession,
    message_id: uuid.UUID,
    key: str,
    payload: dict[str, Any],
    reply: str,
    now: datetime,
) -> None:
    """Mark the delivery and its message sent, and commit without waiting for the disk."""
    without_waiting_for_the_disk(db)
    db.execute(
        update(EmailDelivery)
        .where(EmailDelivery.idempotency_key == key)
        .values(status=DELIVERED, sent_at=now, claimed_until=None, smtp_response=reply)
        .execution_options(synchronize_session=False)
    )
    db.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id)
        .values(status=SENT, sent_at=now, last_error=None, available_at=now, payload=payload)
        .execution_options(synchronize_session=False)
    )
    db.commit()


def without_waiting_for_the_disk(db: DbSession) -> None:
    """Let this transaction commit without waiting for its WAL flush (PostgreSQL). Only a
    database crash within a fraction of a second can lose it, and a lost `sent` record costs a
    resend with the same Message-ID, never an email (docs/jobs.md, "crash window"); a commit
    that waits for the disk costs a job process as much as the send itself."""
    if db.get_bind().dialect.name == "postgresql":
        db.execute(text("SET LOCAL synchronous_commit = off"))
