"""Who holds an email address: look-alike addresses are one account, and a sign-up that never
proved its address stops holding it after `UNVERIFIED_ACCOUNT_TTL`.

An expired sign-up is an account that was never verified, is older than the TTL and never
signed in (an account that did sign in is in use, whatever its address state: it is never
removed here). It is deleted by whichever request next claims its address, inside that
request's transaction, so nobody has to wait for a sweep; until then it answers like an
unknown account.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm.exc import StaleDataError

from webapp.audit import service as audit
from webapp.auth.models import AuthSession
from webapp.config import current_settings
from webapp.context import SYSTEM, Origin
from webapp.db import DbSession, utcnow
from webapp.errors import Conflict
from webapp.users.models import User, email_key


def email_is(email: str) -> ColumnElement[bool]:
    """The account with this address, or with a look-alike of it (the unique index is on the
    normalized form)."""
    return User.email_normalized == email_key(email)


def find_user_by_email(db: DbSession, email: str) -> User | None:
    return db.scalar(select(User).where(email_is(email)))


def email_taken() -> Conflict:
    return Conflict("An account with this email already exists.", slug="email-taken")


def _cutoff() -> datetime:
    return utcnow() - timedelta(seconds=current_settings().unverified_account_ttl)


def expired(user: User, *, signed_in_before: bool) -> bool:
    """`user` is an expired sign-up, given whether it ever signed in (callers often know)."""
    return user.email_verified_at is None and user.created_at <= _cutoff() and not signed_in_before


def is_expired_signup(db: DbSession, user: User) -> bool:
    if user.email_verified_at is not None or user.created_at > _cutoff():
        return False
    signed_in = select(AuthSession.id).where(AuthSession.user_id == user.id).exists()
    return not db.scalar(select(signed_in))


def ensure_email_free(
    db: DbSession,
    email: str,
    *,
    except_id: uuid.UUID | None = None,
    origin: Origin = SYSTEM,
) -> None:
    """409 `email-taken` when another live account holds `email` (or a look-alike); an expired
    sign-up holding it is deleted now, in the caller's transaction (audited)."""
    existing = db.scalar(select(User).where(email_is(email)).with_for_update())
    if existing is None or existing.id == except_id:
        return
    if not is_expired_signup(db, existing):
        raise email_taken()
    audit.record(db, origin, "user.signup_expired", target_type="user", target_id=existing.id)
    db.delete(existing)
    try:
        # Now, before the caller inserts or renames: the unit of work would order inserts and
        # updates before deletes, and the unique index would refuse them.
        db.flush()
    except StaleDataError:
        # A concurrent request deleted it first and is taking the address.
        db.rollback()
        raise email_taken() from None


def purge_expired(db: DbSession, origin: Origin = SYSTEM, *, batch_size: int = 500) -> int:
    """Delete expired sign-ups (audited), `batch_size` per transaction; returns how many. Not
    needed for correctness — a claim deletes the one in its way — it only keeps the table tidy."""
    signed_in = select(AuthSession.id).where(AuthSession.user_id == User.id).exists()
    query = (
        select(User)
        .where(User.email_verified_at.is_(None), User.created_at <= _cutoff(), ~signed_in)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    )
    total = 0
    while batch := list(db.scalars(query)):
        for user in batch:
            audit.record(db, origin, "user.signup_expired", target_type="user", target_id=user.id)
            db.delete(user)
        db.commit()
        total += len(batch)
    return total
