"""Revoking every key of an account at once: the recovery of an account (a password reset, or a
change that asks for it) must not leave behind a key minted by whoever held the account."""

from __future__ import annotations

import uuid

from sqlalchemy import or_, select

from webapp.apikeys.models import ApiKey
from webapp.apikeys.service import _publish, mark_revoked
from webapp.context import Origin
from webapp.db import DbSession, utcnow


def revoke_all_keys(
    db: DbSession, origin: Origin, user_id: uuid.UUID, *, reason: str
) -> list[ApiKey]:
    """Revoke every active key of a user in the caller's unit of work (a password reset: keys
    minted by whoever had the account must not outlive it). After the commit, pass the result
    to `publish_keys` so the next request with any of them fails."""
    now = utcnow()
    keys = list(
        db.scalars(
            select(ApiKey)
            .where(
                ApiKey.user_id == user_id,
                ApiKey.revoked_at.is_(None),
                or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
            )
            .with_for_update()
        )
    )
    for key in keys:
        mark_revoked(db, origin, key, reason=reason)
    return keys


def publish_keys(keys: list[ApiKey]) -> None:
    for key in keys:
        _publish(key)
