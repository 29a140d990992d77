"""The Redis store's rules for when Redis is away, against a real Redis."""

from __future__ import annotations

import redis

from webapp import cache
from webapp.cache import RedisStore

DEAD = "redis://127.0.0.1:1/0"


def test_an_invalidation_that_failed_is_written_before_the_next_read(redis_url, monkeypatch):
    monkeypatch.setattr(cache, "BACKOFF_SECONDS", 0.0)
    direct = redis.Redis.from_url(redis_url)
    store = RedisStore()
    store.init_app(redis_url)
    store.set("gh:sess:x", b"1", 60)
    live_client = store.client

    store.client = redis.Redis.from_url(DEAD, socket_connect_timeout=0.1)  # Redis unreachable
    store.set_many({"gh:sess:x": b"0"}, 60, critical=True)
    assert direct.get("gh:sess:x") == b"1"  # the revocation did not reach Redis...

    store.client = live_client  # ...Redis answers again
    assert store.get_many(["gh:sess:x"]) == [b"0"]  # ...and it is written before the read
    assert direct.get("gh:sess:x") == b"0"
    assert direct.ttl("gh:sess:x") > 0


def test_a_plain_cache_fill_that_fails_is_not_replayed(redis_url, monkeypatch):
    monkeypatch.setattr(cache, "BACKOFF_SECONDS", 0.0)
    store = RedisStore()
    store.init_app(redis_url)
    live_client = store.client
    store.client = redis.Redis.from_url(DEAD, socket_connect_timeout=0.1)
    store.set_many({"gh:user:y": b"{}"}, 60)
    store.client = live_client
    assert store.get_many(["gh:user:y"]) == [None]


def test_a_dead_redis_answers_none_and_backs_off(monkeypatch):
    store = RedisStore()
    store.init_app(DEAD)
    assert store.get_many(["k"]) is None
    assert store.available is False  # one timeout, then the back-off spares the next requests
    assert store.incr("k", 10) is None
    assert store.ttl("k") is None
    assert store.ping() is False
