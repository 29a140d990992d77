"""Temporary lockout after repeated login failures, per account and per client IP.

Account state lives on the user row (it must survive a Redis restart); the per-IP counter lives in
Redis (many accounts, cheap, and losing it on a restart only shortens a lockout).
"""

from __future__ import annotations

import math
from datetime import timedelta

from observability import metrics
from webapp.audit import service as audit
from webapp.auth import state
from webapp.config import current_settings
from webapp.context import Origin
from webapp.db import DbSession, utcnow
from webapp.errors import AccountLocked
from webapp.extensions import redis_store
from webapp.users.models import User


def _ip_failures_key(ip: str) -> str:
    return f"gh:login-fail:ip:{ip}"


def _ip_lock_key(ip: str) -> str:
    return f"gh:login-lock:ip:{ip}"


def ensure_not_locked(user: User | None, origin: Origin) -> None:
    """429 with Retry-After while the account or the client IP is locked out."""
    if user is not None and user.locked_until is not None:
        remaining = (user.locked_until - utcnow()).total_seconds()
        if remaining > 0:
            raise AccountLocked(retry_after=math.ceil(remaining))
    if origin.ip:
        ttl = redis_store.ttl(_ip_lock_key(origin.ip))
        if ttl is not None and ttl > 0:
            raise AccountLocked(retry_after=ttl)


def register_failure(db: DbSession, user: User | None, origin: Origin) -> None:
    """Count a failed attempt; lock the account or IP when its threshold is reached (audited)."""
    settings = current_settings()
    if user is not None:
        user.failed_login_count += 1
        if user.failed_login_count >= settings.lockout_threshold:
            user.locked_until = utcnow() + timedelta(seconds=settings.lockout_duration)
            user.failed_login_count = 0
            metrics.LOCKOUTS.labels(scope="account").inc()
            audit.record(
                db, origin, "auth.lockout", target_type="user", target_id=user.id, scope="account"
            )
    if origin.ip:
        count = redis_store.incr(_ip_failures_key(origin.ip), settings.lockout_window)
        if count is not None and count >= settings.lockout_ip_threshold:
            redis_store.set(_ip_lock_key(origin.ip), b"1", settings.lockout_duration)
            redis_store.delete(_ip_failures_key(origin.ip))
            metrics.LOCKOUTS.labels(scope="ip").inc()
            audit.record(db, origin, "auth.lockout", scope="ip", ip_failures=count)


def record_failure(db: DbSession, user: User | None, origin: Origin, *, reason: str) -> None:
    """A failed credential check, committed on its own: counted towards lockout and audited."""
    register_failure(db, user, origin)
    audit.record(
        db,
        origin,
        "auth.login_failed",
        target_type="user" if user else None,
        target_id=user.id if user else None,
        reason=reason,
    )
    db.commit()
    if user is not None:
        state.publish_user(user)


def register_success(user: User) -> None:
    if user.failed_login_count or user.locked_until:
        user.failed_login_count = 0
        user.locked_until = None
