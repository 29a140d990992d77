"""The queues (by priority) and the one way jobs code connects to Redis."""

from __future__ import annotations

import redis
from rq import Queue

HIGH, DEFAULT, LOW = "high", "default", "low"
QUEUES = (HIGH, DEFAULT, LOW)  # a worker empties them in this order
RESULT_TTL = 3600  # finished jobs stay inspectable for an hour
FAILURE_TTL = 90 * 24 * 3600  # dead letters stay in RQ's failed registry for 90 days

_connections: dict[tuple[str, float | None], redis.Redis] = {}


def connect(url: str, *, socket_timeout: float | None = None) -> redis.Redis:
    """A Redis client for RQ (bytes, no decoding), one per URL and timeout. Forked job processes
    inherit it safely: redis-py's pool notices the new process and opens its own connections.

    The worker's own connection has no socket timeout (it blocks in BLPOP); the dispatcher's and
    the API's have a short one, so that a hung Redis costs seconds, not minutes.
    """
    key = (url, socket_timeout)
    client = _connections.get(key)
    if client is None:
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=5,
            socket_timeout=socket_timeout,
            health_check_interval=30,
        )
        _connections[key] = client
    return client


def queue(name: str, connection: redis.Redis) -> Queue:
    if name not in QUEUES:
        raise ValueError(f"unknown queue {name!r}")
    return Queue(name, connection=connection)


def all_queues(connection: redis.Redis) -> list[Queue]:
    return [queue(name, connection) for name in QUEUES]
