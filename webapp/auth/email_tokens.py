"""Single-use tokens (email verification, password reset, the MFA login step), stored only as
hashes, and the outbox emails that carry them."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from webapp.auth.models import OneTimeToken
from webapp.config import current_settings
from webapp.context import Origin
from webapp.db import DbSession, utcnow
from webapp.errors import ValidationFailed
from webapp.outbox import service as outbox
from webapp.security.secrets import hash_token, new_token
from webapp.users.models import User

VERIFY_EMAIL, PASSWORD_RESET = "verify_email", "password_reset"
MFA_LOGIN = "mfa_login"
# The second step of a login that asked for `remember_me`: the choice travels with the token.
MFA_LOGIN_REMEMBER = "mfa_login_remember"


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


def find_live(db: DbSession, plaintext: str, *purposes: str) -> OneTimeToken | None:
    """The unused, unexpired token row for `plaintext` of one of `purposes`, locked for this
    transaction."""
    row = db.scalar(
        select(OneTimeToken)
        .where(OneTimeToken.token_hash == hash_token(plaintext), OneTimeToken.purpose.in_(purposes))
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
        payload={
            "name": user.name,
            "token": token,
            "link": _link(path, token),
            "expires_at": row.expires_at.isoformat(),
        },
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
