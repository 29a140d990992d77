"""Sign-in throttling that neither tells which accounts exist nor lets others lock an owner out.

Every counter is keyed by what the caller sent — the normalised email and the client IP — never by
whether an account has that email, so an unknown address goes through the same counters, answers
and timings as a known one at every step, the lockout included:

- per (email, client IP): `LOCKOUT_THRESHOLD` failures within `LOCKOUT_WINDOW` lock that pair for
  `LOCKOUT_DURATION` (429 `account-locked`). An attacker elsewhere only locks himself out.
- per client IP, whatever the email: `LOCKOUT_IP_THRESHOLD` failures lock the IP the same way.
- per email, from every IP: `LOCKOUT_ACCOUNT_THRESHOLD` failures within the window hold sign-in
  back until that window ends (429 `login-throttled`, `Retry-After` the true wait). It is a delay,
  not a lockout: the window frees on its own, and a client (IP and User-Agent) that signed in to
  the account before is not held back by it.

Counters live in Redis under an HMAC of the email (the address itself is not stored). When Redis
cannot answer, each process counts in a bounded table of its own: an outage weakens the limits
(per process instead of shared) but neither switches them off nor tells accounts apart.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from dataclasses import dataclass

from flask import current_app

from observability import metrics
from webapp.audit import service as audit
from webapp.config import current_settings
from webapp.context import Origin
from webapp.db import DbSession
from webapp.errors import AccountLocked, LoginThrottled, TooManyRequests
from webapp.extensions import redis_store
from webapp.users.models import User

LOCAL_MAX_ENTRIES = 100_000


def normalize_email(email: str) -> str:
    """The form sign-in matches accounts by (the unique index is on lower(email))."""
    return email.strip().lower()


@dataclass(frozen=True)
class _Keys:
    pair_failures: str
    pair_lock: str
    account_failures: str
    account_lock: str
    ip_failures: str | None
    ip_lock: str | None


def _keys(email: str, origin: Origin) -> _Keys:
    secret = current_settings().secret_key.encode()
    account = hmac.new(secret, normalize_email(email).encode(), hashlib.sha256).hexdigest()[:32]
    pair = hmac.new(secret, f"{account}|{origin.ip or ''}".encode(), hashlib.sha256).hexdigest()[
        :32
    ]
    ip = origin.ip
    return _Keys(
        pair_failures=f"gh:login-fail:pair:{pair}",
        pair_lock=f"gh:login-lock:pair:{pair}",
        account_failures=f"gh:login-fail:acct:{account}",
        account_lock=f"gh:login-lock:acct:{account}",
        ip_failures=f"gh:login-fail:ip:{ip}" if ip else None,
        ip_lock=f"gh:login-lock:ip:{ip}" if ip else None,
    )


class LocalCounters:
    """The fallback while Redis is away: counters and locks with expiry, bounded in size."""

    def __init__(self, max_entries: int = LOCAL_MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._values: dict[str, tuple[float, float]] = {}  # key -> (value, expires at)
        self._lock = threading.Lock()

    def _live(self, key: str, now: float) -> tuple[float, float] | None:
        entry = self._values.get(key)
        if entry is not None and entry[1] <= now:
            del self._values[key]
            return None
        return entry

    def _make_room(self, now: float) -> None:
        if len(self._values) < self.max_entries:
            return
        for key in [k for k, (_, expires) in self._values.items() if expires <= now]:
            del self._values[key]
        while len(self._values) >= self.max_entries:
            # The oldest entry goes first: a flood of new keys shortens old counts, as a
            # Redis restart would, and never grows the process without bound.
            del self._values[next(iter(self._values))]

    def incr(self, key: str, ttl: int) -> tuple[int, float]:
        """The new count and the seconds until its window ends."""
        now = time.time()
        with self._lock:
            entry = self._live(key, now)
            if entry is None:
                self._make_room(now)
                entry = (0, now + ttl)
            count, expires = entry[0] + 1, entry[1]
            self._values[key] = (count, expires)
        return int(count), expires - now

    def set(self, key: str, value: float, ttl: float) -> None:
        now = time.time()
        with self._lock:
            self._make_room(now)
            self._values[key] = (value, now + ttl)

    def get(self, key: str) -> float | None:
        with self._lock:
            entry = self._live(key, time.time())
        return entry[0] if entry else None

    def delete(self, key: str) -> None:
        with self._lock:
            self._values.pop(key, None)


def _local() -> LocalCounters:
    """This application's fallback table (one per app: tests build several in one process)."""
    counters: LocalCounters | None = current_app.extensions.get("gatehouse_login_counters")
    if counters is None:
        counters = current_app.extensions.setdefault("gatehouse_login_counters", LocalCounters())
    return counters


def _incr(key: str, ttl: int) -> tuple[int, float | None]:
    """Count one more in a window of `ttl` seconds; the seconds left are known only locally."""
    count = redis_store.incr(key, ttl)
    if count is not None:
        return count, None
    return _local().incr(key, ttl)


def _window_left(key: str, known: float | None, ttl: int) -> float:
    if known is not None:
        return known
    left = redis_store.ttl(key)
    return float(left) if left is not None and left > 0 else float(ttl)


def _set_until(key: str, until: float) -> None:
    """A lock or throttle that ends at `until` (epoch seconds); its value is that deadline."""
    ttl = max(1, math.ceil(until - time.time()))
    redis_store.set(key, repr(until), ttl)
    if not redis_store.available:
        _local().set(key, until, ttl)


def _deadlines(keys: list[str]) -> list[float | None]:
    values = redis_store.get_many(keys)
    if values is None:
        local = _local()
        return [local.get(key) for key in keys]
    return [float(value) if value is not None else None for value in values]


def _delete(*keys: str) -> None:
    redis_store.delete(*keys)
    local = _local()
    for key in keys:
        local.delete(key)


@dataclass(frozen=True)
class LoginGate:
    """What the lockout check read besides the locks: whether this IP has failures counted for
    the email, which a successful sign-in clears (with none, there is nothing to clear)."""

    failures_counted: bool


def ensure_not_locked(email: str, origin: Origin, *, known_device: bool = False) -> LoginGate:
    """429 with a true Retry-After while the (email, IP) pair or the IP is locked out
    (`account-locked`), or the email is throttled across all IPs (`login-throttled`) — unless
    this IP and client signed in to the account before (`known_device`). The pair's failure
    count is read in the same round trip."""
    keys = _keys(email, origin)
    names = [keys.pair_failures, keys.pair_lock, keys.account_lock]
    if keys.ip_lock:
        names.append(keys.ip_lock)
    failures, pair, account, *ip = _deadlines(names)
    now = time.time()
    locked = max([d - now for d in (pair, *ip) if d is not None], default=0.0)
    throttled = account - now if account is not None and not known_device else 0.0
    error: TooManyRequests | None = None
    if locked > 0 and locked >= throttled:
        error = AccountLocked(retry_after=math.ceil(locked))
    elif throttled > 0:
        error = LoginThrottled(retry_after=math.ceil(throttled))
    if error is not None:
        raise error
    return LoginGate(failures_counted=failures is not None)


def _lockout_event(db: DbSession, origin: Origin, user: User | None, scope: str) -> None:
    metrics.LOCKOUTS.labels(scope=scope).inc()
    audit.record(
        db,
        origin,
        "auth.lockout",
        target_type="user" if user is not None else None,
        target_id=user.id if user is not None else None,
        scope=scope,
    )


def register_failure(db: DbSession, email: str, user: User | None, origin: Origin) -> None:
    """Count a failed attempt against the pair, the email and the IP; lock or throttle each
    that reaches its threshold (audited, the same way whether or not the account exists)."""
    settings = current_settings()
    keys = _keys(email, origin)
    window = settings.lockout_window

    count, _ = _incr(keys.pair_failures, window)
    if count >= settings.lockout_threshold:
        _set_until(keys.pair_lock, time.time() + settings.lockout_duration)
        _delete(keys.pair_failures)
        _lockout_event(db, origin, user, "account_ip")

    count, left = _incr(keys.account_failures, window)
    if count >= settings.lockout_account_threshold:
        # Until the window that holds these failures ends: the Retry-After is the true wait.
        _set_until(
            keys.account_lock, time.time() + _window_left(keys.account_failures, left, window)
        )
        if count == settings.lockout_account_threshold:
            _lockout_event(db, origin, user, "account")

    if keys.ip_failures and keys.ip_lock:
        count, _ = _incr(keys.ip_failures, window)
        if count >= settings.lockout_ip_threshold:
            _set_until(keys.ip_lock, time.time() + settings.lockout_duration)
            _delete(keys.ip_failures)
            metrics.LOCKOUTS.labels(scope="ip").inc()
            audit.record(db, origin, "auth.lockout", scope="ip", ip_failures=count)


def record_failure(
    db: DbSession, email: str, user: User | None, origin: Origin, *, reason: str
) -> None:
    """A failed credential check, committed on its own: counted towards lockout and audited.
    Nothing here depends on `user` beyond the audit event's target, so an unknown email costs
    the same work."""
    register_failure(db, email, user, origin)
    audit.record(
        db,
        origin,
        "auth.login_failed",
        target_type="user" if user else None,
        target_id=user.id if user else None,
        reason=reason,
    )
    db.commit()


def register_success(email: str, origin: Origin, gate: LoginGate | None = None) -> None:
    """The right credentials from this IP: its failure count for the email starts again. The
    email's count across IPs does not: one correct sign-in must not buy a guesser elsewhere a
    fresh budget. With the `gate` this attempt passed and no failures counted then, nothing is
    written: a failure counted since (a concurrent attempt) stays until its window ends, the
    stricter side."""
    if gate is not None and not gate.failures_counted:
        return
    _delete(_keys(email, origin).pair_failures)


def clear_account(email: str, origin: Origin) -> None:
    """The owner proved control of the mailbox (password reset): lift the throttle across IPs
    and the lockout of the email from the owner's own IP."""
    keys = _keys(email, origin)
    _delete(keys.account_failures, keys.account_lock, keys.pair_failures, keys.pair_lock)
