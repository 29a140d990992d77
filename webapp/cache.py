"""The one Redis connection of the API process, and the rule for when Redis is away.

Redis is a cache and a rate-limit store here, never the system of record: every caller has a
database fallback. After a Redis error the store stays "down" for a short back-off so that a dead
Redis costs one timeout per back-off period, not one per request.

Writes that invalidate security state (a revoked session, a changed user) must not be lost to a
Redis blip: a failed one is kept and written again before anything is read once Redis answers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

import redis

from webapp.near_cache import NearCache, channel_for

log = logging.getLogger(__name__)

BACKOFF_SECONDS = 2.0
SOCKET_TIMEOUT = 0.5
MAX_PENDING_WRITES = 10_000


class RedisStore:
    def __init__(
        self, url: str | None = None, timeout: float = SOCKET_TIMEOUT, local_ttl: float = 0
    ) -> None:
        self.timeout = timeout
        self.local_ttl = local_ttl
        self.client: redis.Redis | None = None
        self.near: NearCache | None = None
        self.url: str | None = None
        self._down_until = 0.0
        self._pending: dict[str, tuple[bytes | str, int]] = {}
        self.init_app(url)

    def init_app(self, url: str | None) -> None:
        if self.near is not None:
            self.near.close()
        self.url = url
        self._down_until = 0.0
        self._pending = {}
        self.client = (
            redis.Redis.from_url(
                url,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                health_check_interval=30,
                retry_on_timeout=False,
            )
            if url
            else None
        )
        self.channel = channel_for(self.client) if self.client is not None else ""
        self.near = (
            NearCache(url, self.channel, ttl=self.local_ttl, timeout=self.timeout)
            if url and self.local_ttl > 0
            else None
        )

    @property
    def available(self) -> bool:
        return self.client is not None and time.monotonic() >= self._down_until

    def _failed(self, exc: Exception) -> None:
        self._down_until = time.monotonic() + BACKOFF_SECONDS
        log.warning("redis unavailable, falling back to the database: %s", exc.__class__.__name__)

    def _replay_pending(self) -> None:
        """Write the invalidations that failed while Redis was away, before reading anything."""
        if not self._pending or self.client is None:
            return
        pending, self._pending = self._pending, {}
        pipe = self.client.pipeline(transaction=False)
        for key, (value, ttl) in pending.items():
            pipe.set(key, value, ex=ttl)
        pipe.publish(self.channel, "\n".join(pending))
        try:
            pipe.execute()
        except redis.RedisError:
            self._pending = {**pending, **self._pending}
            raise

    def _keep(self, values: Mapping[str, bytes | str], ttl: int) -> None:
        if len(self._pending) + len(values) <= MAX_PENDING_WRITES:
            self._pending.update({key: (value, ttl) for key, value in values.items()})
        else:  # pragma: no cover - a very long outage: cached state expires by its TTL instead
            log.error("dropping %d cache invalidations after a long Redis outage", len(values))

    def forget_local(self) -> None:
        """Drop this process's copies (after Redis was flushed behind the writers' backs)."""
        if self.near is not None:
            self.near.clear()

    def get_many(self, keys: Sequence[str]) -> list[bytes | None] | None:
        """Values for `keys`, or None when Redis cannot answer (callers use the database)."""
        return self.get_hot(keys, local=False)[0]

    def get_hot(
        self, keys: Sequence[str], *, local: bool = True
    ) -> tuple[list[bytes | None] | None, str]:
        """Like `get_many`, for keys whose every writer uses `set_many`: they may come from this
        process's copy. Also says where the values came from: "local", "redis" or "unavailable"
        (None: callers use the database)."""
        if not self.available or self.client is None:
            return None, "unavailable"
        near = self.near if local else None
        token = None
        if near is not None:
            held, token = near.lookup(keys)
            if held is not None:
                return list(held), "local"
        try:
            self._replay_pending()
            # No decode_responses on this client: the replies are bytes, never the str redis
            # types them as too.
            values: list[bytes | None] = self.client.mget(keys)  # type: ignore[assignment]
        except redis.RedisError as exc:
            self._failed(exc)
            return None, "unavailable"
        if near is not None:
            near.keep(token, keys, values)
        return values, "redis"

    def set(self, key: str, value: bytes | str, ttl: int, *, only_if_absent: bool = False) -> None:
        if not self.available or self.client is None:
            return
        try:
            self.client.set(key, value, ex=ttl, nx=only_if_absent)
        except redis.RedisError as exc:
            self._failed(exc)

    def set_many(
        self, values: Mapping[str, bytes | str], ttl: int, *, critical: bool = False
    ) -> None:
        """Overwrite `values` and announce them on the invalidation channel, so every process
        drops its local copy. A `critical` write (an invalidation) that fails is written again
        as soon as Redis answers, before any read."""
        if not values or self.client is None:
            return
        try:
            if not self.available:
                if critical:
                    self._keep(values, ttl)
                return
            self._replay_pending()
            pipe = self.client.pipeline(transaction=False)
            for key, value in values.items():
                pipe.set(key, value, ex=ttl)
            pipe.publish(self.channel, "\n".join(values))
            pipe.execute()
        except redis.RedisError as exc:
            if critical:
                self._keep(values, ttl)
            self._failed(exc)
        finally:
            if self.near is not None:
                self.near.invalidate(list(values))

    def incr(self, key: str, ttl: int) -> int | None:
        """Increment a counter that expires `ttl` seconds after its first increment."""
        if not self.available or self.client is None:
            return None
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.incr(key)
            pipe.expire(key, ttl, nx=True)
            count, _ = pipe.execute()
            return int(count)
        except redis.RedisError as exc:
            self._failed(exc)
            return None

    def ttl(self, key: str) -> int | None:
        if not self.available or self.client is None:
            return None
        try:
            return int(self.client.ttl(key))
        except redis.RedisError as exc:
            self._failed(exc)
            return None

    def delete(self, *keys: str) -> None:
        if not keys or not self.available or self.client is None:
            return
        try:
            self.client.delete(*keys)
        except redis.RedisError as exc:
            self._failed(exc)

    def claim(self, key: str, ttl: int) -> bool:
        """SET NX with a TTL: True for the one caller that created the key (a lease or lock)."""
        if not self.available or self.client is None:
            return False
        try:
            return bool(self.client.set(key, b"1", ex=ttl, nx=True))
        except redis.RedisError as exc:
            self._failed(exc)
            return False

    def hset(self, key: str, field: str, value: str) -> bool:
        """One field of a hash; False when Redis could not take it (callers fall back)."""
        if not self.available or self.client is None:
            return False
        try:
            self.client.hset(key, field, value)
            return True
        except redis.RedisError as exc:
            self._failed(exc)
            return False

    def take_hash(self, key: str) -> dict[bytes, bytes] | None:
        """Read and delete a hash atomically (MULTI), so no field written meanwhile is lost."""
        if not self.available or self.client is None:
            return None
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.hgetall(key)
            pipe.delete(key)
            values, _ = pipe.execute()
            return dict(values)
        except redis.RedisError as exc:
            self._failed(exc)
            return None

    def ping(self) -> bool:
        if self.client is None:
            return False
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False
