"""Changing the sign-in email: the new address becomes the login only once its owner confirms
the emailed link (POST /auth/verify-email); until then the account keeps its address and the
pending one lives only on the link's token. The old address is told when the change happens.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select

from webapp.audit import service as audit
from webapp.auth import email_tokens, notices
from webapp.auth.models import OneTimeToken
from webapp.auth.signups import ensure_email_free
from webapp.context import Origin
from webapp.db import DbSession, utcnow
from webapp.errors import NotFound, TooManyRequests, ValidationFailed
from webapp.users.models import User

# Each request mails a link to an address the caller chose: one a minute per account.
REQUEST_INTERVAL = 60


def start(db: DbSession, origin: Origin, user: User, new_email: str) -> None:
    """Make `new_email` the pending address of `user` (the caller checked it is free): a link
    to it, and earlier pending links stop working — only the newest request can complete."""
    email_tokens.invalidate(db, user.id, email_tokens.EMAIL_CHANGE)
    email_tokens.queue_email_change_email(db, origin, user, new_email)
    audit.record(db, origin, "user.email_change_requested", target_type="user", target_id=user.id)


def request_email_change(db: DbSession, origin: Origin, user_id: uuid.UUID, email: str) -> None:
    """Self-service: 409 when another account holds the address, 422 when it is already the
    caller's, 429 within `REQUEST_INTERVAL` of the previous request."""
    new_email = email.strip()
    user = db.scalar(select(User).where(User.id == user_id).with_for_update())
    if user is None:
        raise NotFound("No such user.")
    if new_email == user.email:
        raise ValidationFailed(
            "This is already your email address.",
            errors={"email": ["is already your email address"]},
        )
    ensure_email_free(db, new_email, except_id=user.id, origin=origin)
    _, newest = email_tokens.recent(db, user.id, email_tokens.EMAIL_CHANGE, REQUEST_INTERVAL)
    if newest is not None:
        wait = newest + timedelta(seconds=REQUEST_INTERVAL) - utcnow()
        raise TooManyRequests(
            "An email change was requested moments ago; wait before asking again.",
            retry_after=int(wait.total_seconds()) + 1,
        )
    start(db, origin, user, new_email)
    db.commit()


def apply(db: DbSession, origin: Origin, user: User, row: OneTimeToken) -> None:
    """Confirmation (inside verify_email's unit of work, `user` locked): the new address
    becomes the login if it is still free; links sent to the old address stop working."""
    if not user.active or row.new_email is None:
        raise email_tokens.invalid_token()
    ensure_email_free(db, row.new_email, except_id=user.id, origin=origin)
    old_email = user.email
    user.email = row.new_email
    user.email_verified_at = utcnow()
    email_tokens.invalidate(
        db,
        user.id,
        email_tokens.VERIFY_EMAIL,
        email_tokens.PASSWORD_RESET,
        email_tokens.EMAIL_CHANGE,
    )
    # To the address that stops being the login, without a link: that mailbox may no longer be
    # the owner's, and nothing in it may sign anyone in.
    notices.notify(
        db,
        origin,
        "email_changed",
        recipient=old_email,
        name=user.name,
        details=[("New sign-in address", user.email)],
    )
    audit.record(
        db, origin.acting_as(user.id), "user.email_changed", target_type="user", target_id=user.id
    )
