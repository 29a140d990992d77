"""Single-use tokens (email verification, password reset, the MFA login step), stored only as
hashes, and the outbox emails that carry them."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select

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
MFA_LOGIN = "mfa_login"


def issue(db: DbSession, user: User, purpose: str, ttl: int) -> tuple[str, OneTimeToken]:
    """A new token for `user`: its plaintext (to send) and its row (which keeps only a hash)."""
    plaintext, digest = new_token()
    row = OneTimeToken(
        user_id=user.id,
        purpose=purpose,
        token_hash=digest,
        expires_at=utcnow() + timedelta(seconds=ttl),
    )
    db.add(row)
    db.flush()
    return plaintext, row


def find_live(db: DbSession, plaintext: str, purpose: str) -> OneTimeToken | None:
    """The unused, unexpired token row for `plaintext`, locked for this transaction."""
    row = db.scalar(
        select(OneTimeToken)
        .where(OneTimeToken.token_hash == hash_token(plaintext), OneTimeToken.purpose == purpose)
        .with_for_update()
    )
    if row is None or row.used_at is not None or row.expires_at <= utcnow():
        return None
    return row


def consume(db: DbSession, plaintext: str, purpose: str) -> OneTimeToken:
    """Mark an emailed token used; 422 `invalid-token` when it is unknown, used or expired."""
    row = find_live(db, plaintext, purpose)
    if row is None:
        raise ValidationFailed(
            "The token is invalid, expired or already used.",
            slug="invalid-token",
            errors={"token": ["invalid, expired or already used"]},
        )
    row.used_at = utcnow()
    return row


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
    db: DbSession, origin: Origin, user: User, *, purpose: str, path: str, ttl: int
) -> None:
    token, row = issue(db, user, purpose, ttl)
    outbox.enqueue(
        db,
        origin,
        template=purpose,
        recipient=user.email,
        idempotency_key=f"{purpose}:{row.id}",
        payload=_payload(user, token, row, path),
    )


def queue_verification_email(db: DbSession, origin: Origin, user: User) -> None:
    ttl = current_settings().email_token_ttl
    _queue_token_email(db, origin, user, purpose=VERIFY_EMAIL, path="/verify-email", ttl=ttl)


def queue_password_reset_email(db: DbSession, origin: Origin, user: User) -> None:
    ttl = current_settings().password_reset_ttl
    _queue_token_email(db, origin, user, purpose=PASSWORD_RESET, path="/reset-password", ttl=ttl)


def queue_welcome_email(db: DbSession, origin: Origin, user: User) -> None:
    outbox.enqueue(
        db,
        origin,
        template="welcome",
        recipient=user.email,
        idempotency_key=f"welcome:{user.id}",
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
    if user.email.lower() != message.recipient.lower():
        raise outbox.NotReplayable("its account has another address now")
    if not user.active:
        raise outbox.NotReplayable("its account is deactivated")
    if purpose == VERIFY_EMAIL and user.email_verified_at is not None:
        raise outbox.NotReplayable("the address is verified already")
    if old.used_at is None:
        old.used_at = utcnow()
    token, row = issue(db, user, purpose, ttl)
    return _payload(user, token, row, path)


@outbox.reissuer(VERIFY_EMAIL)
def _reissue_verification(db: DbSession, message: OutboxMessage) -> dict[str, Any]:
    return _reissue(db, message, path="/verify-email", ttl=current_settings().email_token_ttl)


@outbox.reissuer(PASSWORD_RESET)
def _reissue_password_reset(db: DbSession, message: OutboxMessage) -> dict[str, Any]:
    return _reissue(db, message, path="/reset-password", ttl=current_settings().password_reset_ttl)
