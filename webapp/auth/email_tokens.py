"""Single-use tokens (email verification, password reset, email change, the MFA login step),
stored only as hashes, and the outbox emails that carry them."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update

from webapp.auth.models import OneTimeToken
from webapp.config import current_settings
from webapp.context import Origin
from webapp.db import DbSession, utcnow
from webapp.errors import ValidationFailed
from webapp.outbox import service as outbox
from webapp.outbox.models import OutboxMessage
from webapp.security.secrets import hash_token, new_token
from webapp.users.models import User

VERIFY_EMAIL, PASSWORD_RESET = "verify_email", "password_reset"
EMAIL_CHANGE = "email_change"
MFA_LOGIN = "mfa_login"
# The second step of a login that asked for `remember_me`: the choice travels with the token.
MFA_LOGIN_REMEMBER = "mfa_login_remember"


def issue(
    db: DbSession, user: User, purpose: str, ttl: int, *, new_email: str | None = None
) -> tuple[str, OneTimeToken]:
    """A new token for `user`: its plaintext (to send) and its row (which keeps only a hash)."""
    plaintext, digest = new_token()
    row = OneTimeToken(
        user_id=user.id,
        purpose=purpose,
        token_hash=digest,
        expires_at=utcnow() + timedelta(seconds=ttl),
        new_email=new_email,
    )
    db.add(row)
    db.flush()
    return plaintext, row


def find_live(db: DbSession, plaintext: str, purpose: str | Iterable[str]) -> OneTimeToken | None:
    """The unused, unexpired token row for `plaintext` (of one of the purposes), locked for this
    transaction."""
    purposes = [purpose] if isinstance(purpose, str) else list(purpose)
    row = db.scalar(
        select(OneTimeToken)
        .where(
            OneTimeToken.token_hash == hash_token(plaintext),
            OneTimeToken.purpose.in_(purposes),
        )
        .with_for_update()
    )
    if row is None or row.used_at is not None or row.expires_at <= utcnow():
        return None
    return row


def invalid_token() -> ValidationFailed:
    return ValidationFailed(
        "The token is invalid, expired or already used.",
        slug="invalid-token",
        errors={"token": ["invalid, expired or already used"]},
    )


def consume(db: DbSession, plaintext: str, purpose: str | Iterable[str]) -> OneTimeToken:
    """Mark an emailed token used; 422 `invalid-token` when it is unknown, used or expired."""
    row = find_live(db, plaintext, purpose)
    if row is None:
        raise invalid_token()
    row.used_at = utcnow()
    return row


def invalidate(db: DbSession, user_id: uuid.UUID, *purposes: str) -> None:
    """Use up every outstanding token of these purposes: only a newer link works."""
    db.execute(
        update(OneTimeToken)
        .where(
            OneTimeToken.user_id == user_id,
            OneTimeToken.purpose.in_(purposes),
            OneTimeToken.used_at.is_(None),
        )
        .values(used_at=utcnow())
    )


def recent(
    db: DbSession, user_id: uuid.UUID, purpose: str, window: int
) -> tuple[int, datetime | None]:
    """How many tokens of `purpose` the user was sent in the last `window` seconds, and when
    the newest was: what limits how often a mailbox can be sent links."""
    count, newest = db.execute(
        select(func.count(), func.max(OneTimeToken.created_at)).where(
            OneTimeToken.user_id == user_id,
            OneTimeToken.purpose == purpose,
            OneTimeToken.created_at > utcnow() - timedelta(seconds=window),
        )
    ).one()
    return int(count), newest


def _link(path: str, token: str) -> str:
    return f"{current_settings().public_base_url}{path}?token={token}"


def _payload(user: User, token: str, row: OneTimeToken, path: str) -> dict[str, Any]:
    return {
        "name": user.name,
        "token": token,
        "link": _link(path, token),
        "expires_at": row.expires_at.isoformat(),
    }


def _queue_token_email(
    db: DbSession,
    origin: Origin,
    user: User,
    *,
    purpose: str,
    path: str,
    ttl: int,
    new_email: str | None = None,
) -> None:
    token, row = issue(db, user, purpose, ttl, new_email=new_email)
    outbox.enqueue(
        db,
        origin,
        template=purpose,
        recipient=new_email or user.email,
        idempotency_key=f"{purpose}:{row.id}",
        payload=_payload(user, token, row, path),
    )


def queue_verification_email(db: DbSession, origin: Origin, user: User) -> None:
    ttl = current_settings().email_token_ttl
    _queue_token_email(db, origin, user, purpose=VERIFY_EMAIL, path="/verify-email", ttl=ttl)


def queue_password_reset_email(db: DbSession, origin: Origin, user: User) -> None:
    ttl = current_settings().password_reset_ttl
    _queue_token_email(db, origin, user, purpose=PASSWORD_RESET, path="/reset-password", ttl=ttl)


def queue_email_change_email(db: DbSession, origin: Origin, user: User, new_email: str) -> None:
    """The confirmation link, to the new address; confirmed through POST /auth/verify-email."""
    ttl = current_settings().email_token_ttl
    _queue_token_email(
        db,
        origin,
        user,
        purpose=EMAIL_CHANGE,
        path="/verify-email",
        ttl=ttl,
        new_email=new_email,
    )


def queue_welcome_email(db: DbSession, origin: Origin, user: User) -> None:
    """Once per account, whatever verifies it and however often (a key that exists would abort
    the whole transaction with a unique violation)."""
    key = f"welcome:{user.id}"
    if outbox.exists(db, key):
        return
    outbox.enqueue(
        db,
        origin,
        template="welcome",
        recipient=user.email,
        idempotency_key=key,
        payload={"name": user.name, "link": current_settings().public_base_url},
    )


# --- replaying a dead letter ---------------------------------------------------------------------
# A dead verification or reset email keeps no token (webapp.outbox.service.dead_letter_payload),
# so its replay mints a new one for the same account and retires the one that was never delivered.


def _reissue(db: DbSession, message: OutboxMessage, *, path: str, ttl: int) -> dict[str, Any]:
    purpose, _, row_id = message.idempotency_key.partition(":")
    try:
        old = db.get(OneTimeToken, uuid.UUID(row_id))
    except ValueError:
        old = None
    user = db.get(User, old.user_id) if old is not None else None
    if old is None or user is None:
        raise outbox.NotReplayable("its account no longer exists")
    # An email change's link goes to the address being confirmed, every other one to the login.
    address = old.new_email if purpose == EMAIL_CHANGE else user.email
    if (address or "").lower() != message.recipient.lower():
        raise outbox.NotReplayable("its account has another address now")
    if not user.active:
        raise outbox.NotReplayable("its account is deactivated")
    if purpose == EMAIL_CHANGE and old.used_at is not None:
        raise outbox.NotReplayable("a newer email change replaced it")
    if purpose == VERIFY_EMAIL and user.email_verified_at is not None:
        raise outbox.NotReplayable("the address is verified already")
    if old.used_at is None:
        old.used_at = utcnow()
    token, row = issue(db, user, purpose, ttl, new_email=old.new_email)
    return _payload(user, token, row, path)


@outbox.reissuer(VERIFY_EMAIL)
def _reissue_verification(db: DbSession, message: OutboxMessage) -> dict[str, Any]:
    return _reissue(db, message, path="/verify-email", ttl=current_settings().email_token_ttl)


@outbox.reissuer(PASSWORD_RESET)
def _reissue_password_reset(db: DbSession, message: OutboxMessage) -> dict[str, Any]:
    return _reissue(db, message, path="/reset-password", ttl=current_settings().password_reset_ttl)


@outbox.reissuer(EMAIL_CHANGE)
def _reissue_email_change(db: DbSession, message: OutboxMessage) -> dict[str, Any]:
    return _reissue(db, message, path="/verify-email", ttl=current_settings().email_token_ttl)
