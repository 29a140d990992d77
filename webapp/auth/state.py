"""The per-request authentication state: is this session live, and who is this user now?

Checked on every authenticated request, so it has a fast path: one Redis MGET for the session
flag and the user's snapshot. Misses and a Redis outage fall back to the database (never fail
open). Writers overwrite the cached value after they commit, and readers only fill empty keys
(SET NX), so a reader holding a stale row can never undo a revocation or a role change.
"""

from __future__ import annotations

import functools
import json
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from observability import metrics
from webapp.auth.models import AuthSession
from webapp.config import current_settings
from webapp.db import DbSession, utcnow
from webapp.extensions import redis_store
from webapp.users.models import User

SESSION_LIVE, SESSION_REVOKED = b"1", b"0"
LIVE_SESSION_TTL = 60
USER_GONE = b"-"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user (as cached), their current role and their session — or, for a
    request authenticated by an API key, the key and its scopes (`session_id` is then None)."""

    user_id: uuid.UUID
    role: str
    session_id: uuid.UUID | None
    user: dict[str, Any]
    api_key_id: uuid.UUID | None = None
    scopes: frozenset[str] = frozenset()


def _session_key(session_id: uuid.UUID) -> str:
    return f"gh:sess:{session_id}"


def _user_key(user_id: uuid.UUID) -> str:
    return f"gh:user:{user_id}"


def _ttl() -> int:
    return current_settings().cache_ttl


def user_snapshot(user: User) -> dict[str, Any]:
    """The user as the API shows it (and as the cache keeps it): JSON-safe values only."""
    return {
        "id": str(user.id),
        "email": user.email,
        "name": user.name,
        "role": user.role,
        "active": user.active,
        "email_verified": user.email_verified,
        "created_at": user.created_at.isoformat(),
        "updated_at": user.updated_at.isoformat(),
        "version": user.version,
    }


def publish_user(user: User) -> None:
    """After a committed write: the cache holds the new state for the next request."""
    value = json.dumps(user_snapshot(user))
    redis_store.set_many({_user_key(user.id): value}, _ttl(), critical=True)


def forget_user(user_id: uuid.UUID) -> None:
    redis_store.set_many({_user_key(user_id): USER_GONE}, _ttl(), critical=True)


def publish_sessions_revoked(session_ids: list[uuid.UUID]) -> None:
    ttl = max(_ttl(), current_settings().access_token_ttl)
    revoked = {_session_key(sid): SESSION_REVOKED for sid in session_ids}
    redis_store.set_many(revoked, ttl, critical=True)


def _session_live_in_db(db: DbSession, session_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    row = db.execute(
        select(AuthSession.revoked_at, AuthSession.expires_at).where(
            AuthSession.id == session_id, AuthSession.user_id == user_id
        )
    ).first()
    return row is not None and row.revoked_at is None and row.expires_at > utcnow()


@functools.lru_cache(maxsize=4096)
def _parsed(raw: bytes) -> dict[str, Any]:
    """A cached snapshot, parsed once per process: the same bytes come back on every request
    of a signed-in user. The dict is shared, so callers only read it."""
    parsed: dict[str, Any] = json.loads(raw)
    return parsed


def _user_from_db(db: DbSession, user_id: uuid.UUID) -> dict[str, Any] | None:
    user = db.get(User, user_id)
    return user_snapshot(user) if user is not None else None


def _count(source: str, session_hit: bool, user_hit: bool) -> None:
    for cache, hit in (("session", session_hit), ("user", user_hit)):
        metrics.cache_request(cache, _result(source, hit)).inc()


def _result(source: str, hit: bool) -> str:
    if source == "unavailable":
        return source
    if not hit:
        return "miss"
    return "local" if source == "local" else "hit"


def load_principal(db: DbSession, user_id: uuid.UUID, session_id: uuid.UUID) -> Principal | None:
    """The principal for a verified access token, or None when its session or user is gone."""
    cached, source = redis_store.get_hot([_session_key(session_id), _user_key(user_id)])
    session_flag, user_raw = cached if cached is not None else (None, None)
    _count(source, session_flag is not None, user_raw is not None)

    if session_flag is None:
        live = _session_live_in_db(db, session_id, user_id)
        if cached is not None:
            flag = SESSION_LIVE if live else SESSION_REVOKED
            # "Live" is cached briefly: it bounds how long a revocation that another process could
            # not publish (Redis unreachable from it alone) can go unseen.
            ttl = min(_ttl(), LIVE_SESSION_TTL) if live else _ttl()
            redis_store.set(_session_key(session_id), flag, ttl, only_if_absent=True)
    else:
        live = session_flag == SESSION_LIVE
    if not live:
        return None

    user = _active_user(db, user_id, user_raw, redis_answered=cached is not None)
    if user is None:
        return None
    return Principal(user_id=user_id, role=user["role"], session_id=session_id, user=user)


def load_user(db: DbSession, user_id: uuid.UUID) -> dict[str, Any] | None:
    """The user behind a credential that is not a session (an API key): from the cache, else the
    database (filling the cache); None when the account is deleted or deactivated."""
    cached, source = redis_store.get_hot([_user_key(user_id)])
    raw = cached[0] if cached is not None else None
    metrics.cache_request("user", _result(source, raw is not None)).inc()
    return _active_user(db, user_id, raw, redis_answered=cached is not None)


def _active_user(
    db: DbSession, user_id: uuid.UUID, raw: bytes | None, *, redis_answered: bool
) -> dict[str, Any] | None:
    """The user snapshot from its cached value, or from the database on a miss (filling an empty
    key only); None when the account is deleted or deactivated."""
    if raw is None:
        user = _user_from_db(db, user_id)
        if redis_answered:
            value = json.dumps(user) if user is not None else USER_GONE
            redis_store.set(_user_key(user_id), value, _ttl(), only_if_absent=True)
    elif raw == USER_GONE:
        user = None
    else:
        user = _parsed(raw)
    if user is None or not user["active"]:
        return None
    return user
