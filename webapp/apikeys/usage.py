"""When an API key was last used, and from where, without a database write per request: uses
are batched in Redis and flushed at most once per `API_KEY_USAGE_FLUSH_INTERVAL`."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import or_, update

from webapp import extensions
from webapp.apikeys.models import ApiKey
from webapp.config import current_settings
from webapp.db import utcnow
from webapp.extensions import redis_store

USAGE_HASH = "gh:apikey-usage"
USAGE_FLUSH_LEASE = "gh:apikey-usage:flush"


def record_use(key_id: uuid.UUID, ip: str | None) -> None:
    """Note the use in a Redis hash (one HSET; the newest use of a key wins); the first request
    after each `API_KEY_USAGE_FLUSH_INTERVAL` takes a lease and writes the batch to the database.
    Without Redis, write directly, at most once per interval per key (a conditional UPDATE)."""
    now = utcnow()
    if redis_store.hset(USAGE_HASH, str(key_id), f"{now.isoformat()}|{ip or ''}"):
        interval = current_settings().api_key_usage_flush_interval
        if redis_store.claim(USAGE_FLUSH_LEASE, interval):
            flush_usage()
        return
    _write_usage({key_id: (now, ip)}, throttle=True)


def flush_usage() -> int:
    """Write the batched last-use times and addresses to the database; returns keys updated."""
    taken = redis_store.take_hash(USAGE_HASH)
    if not taken:
        return 0
    uses: dict[uuid.UUID, tuple[datetime, str | None]] = {}
    for field, value in taken.items():
        at, _, ip = value.decode().partition("|")
        uses[uuid.UUID(field.decode())] = (datetime.fromisoformat(at), ip or None)
    return _write_usage(uses, throttle=False)


def _write_usage(uses: dict[uuid.UUID, tuple[datetime, str | None]], *, throttle: bool) -> int:
    """In a transaction of its own, so that the request's unit of work is not touched."""
    interval = timedelta(seconds=current_settings().api_key_usage_flush_interval)
    written = 0
    with extensions.db.engine.begin() as conn:
        for key_id, (at, ip) in uses.items():
            newer = at - interval if throttle else at
            result = conn.execute(
                update(ApiKey)
                .where(
                    ApiKey.id == key_id,
                    or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < newer),
                )
                .values(last_used_at=at, last_used_ip=ip[:64] if ip else None)
            )
            written += result.rowcount or 0
    return written
