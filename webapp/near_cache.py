"""A per-process copy of the hot authentication keys, so most requests skip the Redis round trip.

Every writer of those keys publishes their names on an invalidation channel after it overwrites
them (`RedisStore.set_many`); each process holds one subscription and drains it, without
blocking, before every lookup. Redis hands a published message to its subscribers in the same
pass that answers the publisher, so a change is dropped here before the writer's client can send
its next request.

The copy is only trusted while the subscription is provably live, because a lost message would
mean a revoked session served as live (never fail open):
- a PING goes out on the subscription every `PING_INTERVAL`; entries are served only while the
  last answered PING (or the SUBSCRIBE) was sent less than `TRUST_WINDOW` ago — everything
  published before it has been drained;
- any error, a second subscribe confirmation (a reconnection) or a PING left unanswered throws
  the whole copy away and subscribes again from a background thread, so a dead Redis never
  holds up a request;
- a lookup that races an invalidation is not kept (the generation counter), and no entry lives
  longer than `ttl` seconds, which bounds staleness should a writer be cut off from Redis alone.

Every lookup drains the subscription under the lock through redis-py's public API
(`get_message(timeout=0)`): about 8 µs, 12 µs with four threads sharing the lock. Polling the
subscription's socket first, lock-free, saved 5 µs of a request's ≈ 1,300 and reached into
redis-py's private connection; an HTTP benchmark could not tell the two apart
(docs/benchmarks.md, "Framework internals: which are kept").
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)

PING_INTERVAL = 1.0
TRUST_WINDOW = 2.0
RETRY_SECONDS = 2.0
MAX_ENTRIES = 50_000


def channel_for(client: redis.Redis) -> str:
    """Pub/sub ignores database numbers: the channel carries it, so tests on other databases of
    one server (and other deployments sharing it) do not invalidate each other."""
    return f"gh:invalidate:{client.connection_pool.connection_kwargs.get('db', 0)}"


class NearCache:
    def __init__(
        self,
        url: str,
        channel: str,
        *,
        ttl: float,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.channel = channel
        self.ttl = ttl
        self.timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, bytes]] = {}
        self._generation = 0
        self._pubsub: Any = None
        self._client: redis.Redis | None = None  # owns the pool: when collected, it disconnects
        self._pid = 0
        self._acked_at = 0.0  # when the last answered PING (or the SUBSCRIBE) was sent
        self._ping_sent_at: float | None = None
        self._connecting = False
        self._retry_at = 0.0

    # --- reading ---------------------------------------------------------------------------

    def lookup(self, keys: Sequence[str]) -> tuple[list[bytes] | None, int | None]:
        """(values, None) when every key is held and trusted. Otherwise (None, token): read Redis
        and hand the token to `keep`; a None token means nothing may be kept now."""
        now = self._clock()
        with self._lock:
            trusted = self._drain(now)
            if not trusted:
                return None, None
            values = []
            for key in keys:
                entry = self._entries.get(key)
                if entry is None or entry[0] <= now:
                    return None, self._generation
                values.append(entry[1])
            return values, None

    def keep(self, token: int | None, keys: Sequence[str], values: Sequence[bytes | None]) -> None:
        """Remember what Redis answered, unless an invalidation arrived since `lookup`."""
        if token is None:
            return
        expires = self._clock() + self.ttl
        with self._lock:
            if token != self._generation:
                return
            if len(self._entries) + len(keys) > MAX_ENTRIES:
                self._entries.clear()
            for key, value in zip(keys, values, strict=True):
                if value is not None:
                    self._entries[key] = (expires, value)

    def invalidate(self, keys: Sequence[str]) -> None:
        """This process's own writes: dropped at once, before the published message returns."""
        with self._lock:
            self._forget(keys)

    def clear(self) -> None:
        """Drop every entry (the next lookups read Redis)."""
        with self._lock:
            self._forget()

    @property
    def trusted(self) -> bool:
        with self._lock:
            return self._drain(self._clock())

    # --- called with the lock held -----------------------------------------------------------

    def _forget(self, keys: Sequence[str] | None = None) -> None:
        """Drop `keys` (all when None); a read in flight since then is not kept."""
        self._generation += 1
        if keys is None:
            self._entries.clear()
        for key in keys or ():
            self._entries.pop(key, None)

    def _drain(self, now: float) -> bool:
        """Apply every pending invalidation; True when the copy may be served."""
        if self._pubsub is None or self._pid != os.getpid():
            self._subscribe_later(now)
            return False
        try:
            while True:
                message = self._pubsub.get_message(timeout=0.0)
                if message is None:
                    break
                kind = message["type"]
                if kind == "message":
                    self._forget(message["data"].decode().split("\n"))
                elif kind == "pong" and self._ping_sent_at is not None:
                    self._acked_at, self._ping_sent_at = self._ping_sent_at, None
                elif kind == "subscribe":  # a reconnection inside the client: messages were lost
                    raise redis.ConnectionError("resubscribed")
            if self._ping_sent_at is None and now - self._acked_at >= PING_INTERVAL:
                self._pubsub.ping()
                self._ping_sent_at = now
            elif self._ping_sent_at is not None and now - self._ping_sent_at > TRUST_WINDOW:
                raise redis.TimeoutError("no answer to PING on the invalidation channel")
        except (redis.RedisError, OSError, ValueError) as exc:
            log.warning("invalidation channel lost, local cache off: %s", exc.__class__.__name__)
            self._reset(now)
            return False
        return now - self._acked_at <= TRUST_WINDOW

    def _reset(self, now: float) -> None:
        pubsub, self._pubsub, self._client = self._pubsub, None, None
        self._forget()
        self._ping_sent_at = None
        self._retry_at = now + RETRY_SECONDS
        if pubsub is not None and self._pid == os.getpid():
            with contextlib.suppress(redis.RedisError, OSError):
                pubsub.close()

    def _subscribe_later(self, now: float) -> None:
        if self._pid != os.getpid():  # new, or a forked child: the parent's socket is not ours
            self._pubsub, self._client, self._pid = None, None, os.getpid()
            self._forget()
            self._connecting, self._retry_at = False, 0.0
        if self._connecting or now < self._retry_at:
            return
        self._connecting = True
        threading.Thread(target=self._subscribe, name="near-cache-subscribe", daemon=True).start()

    def _subscribe(self) -> None:
        """Off the request path: open the subscription, then install it under the lock."""
        pubsub = None
        try:
            client = redis.Redis.from_url(
                self.url,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),
            )
            pubsub = client.pubsub()
            sent_at = self._clock()
            pubsub.subscribe(self.channel)
            confirmed = pubsub.get_message(timeout=self.timeout)
            if confirmed is None or confirmed["type"] != "subscribe":
                raise redis.TimeoutError("no subscribe confirmation")
        except (redis.RedisError, OSError) as exc:
            if pubsub is not None:
                pubsub.close()
            with self._lock:
                self._connecting = False
                self._retry_at = self._clock() + RETRY_SECONDS
            log.warning("invalidation channel unavailable: %s", exc.__class__.__name__)
            return
        with self._lock:
            self._forget()
            self._pubsub, self._client, self._pid = pubsub, client, os.getpid()
            self._acked_at, self._ping_sent_at = sent_at, None
            self._connecting = False

    def close(self) -> None:
        with self._lock:
            self._reset(self._clock())
