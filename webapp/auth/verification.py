"""Proving an address: the emailed link of a sign-up or of an email change (one endpoint for
both), and asking for a fresh sign-up link."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from webapp.audit import service as audit
from webapp.auth import email_change, email_tokens, signups, state
from webapp.auth.service import commit_unique
from webapp.context import Origin
from webapp.db import DbSession, utcnow
from webapp.users.models import User

# A mailbox gets at most one verification link a minute and five a day (the sign-up's own
# included), however many addresses or IPs ask for it.
RESEND_INTERVAL = 60
RESEND_DAILY_MAX = 5
_DAY = 24 * 3600


def verify_email(db: DbSession, origin: Origin, token: str) -> User:
    """A sign-up's link verifies the account (and welcomes it, once ever); an email change's
    link makes its address the login."""
    row = email_tokens.consume(db, token, (email_tokens.VERIFY_EMAIL, email_tokens.EMAIL_CHANGE))
    user = db.scalar(select(User).where(User.id == row.user_id).with_for_update())
    assert user is not None  # tokens cascade with their user
    if row.purpose == email_tokens.EMAIL_CHANGE:
        email_change.apply(db, origin, user, row)
    elif user.email_verified_at is None:
        user.email_verified_at = utcnow()
        email_tokens.queue_welcome_email(db, origin, user)
        audit.record(
            db,
            origin.acting_as(user.id),
            "auth.email_verified",
            target_type="user",
            target_id=user.id,
        )
    # The address may have been taken since the link was sent: the same 409 as a lost race.
    commit_unique(db)
    state.publish_user(user)
    return user


def _may_send(db: DbSession, user: User) -> bool:
    sent_today, newest = email_tokens.recent(db, user.id, email_tokens.VERIFY_EMAIL, _DAY)
    if sent_today >= RESEND_DAILY_MAX:
        return False
    return newest is None or newest <= utcnow() - timedelta(seconds=RESEND_INTERVAL)


def resend_verification(db: DbSession, origin: Origin, email: str) -> None:
    """The same outcome for the caller whatever the address: a fresh link goes only to an
    active, unverified, unexpired sign-up, and earlier links stop working (only the newest
    email is the one to use). Pending email changes are asked for again instead."""
    user = db.scalar(select(User).where(signups.email_is(email)).with_for_update())
    if (
        user is not None
        and user.active
        and user.email_verified_at is None
        and not signups.is_expired_signup(db, user)
        and _may_send(db, user)
    ):
        email_tokens.invalidate(db, user.id, email_tokens.VERIFY_EMAIL)
        email_tokens.queue_verification_email(db, origin, user)
    # Audited either way: similar work on every path, and probing leaves a trace.
    audit.record(
        db,
        origin,
        "auth.verification_resend_requested",
        target_type="user" if user else None,
        target_id=user.id if user else None,
    )
    db.commit()
