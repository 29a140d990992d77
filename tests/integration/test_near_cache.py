"""The per-process copy of the hot auth keys (webapp.near_cache), against a real Redis: served
only while the invalidation channel is provably live, dropped by every write of another process,
and never kept when a read raced an invalidation.

Where a value comes from is observed by changing it in Redis behind the processes' backs (a plain
SET, announced to nobody): a process that still answers the old value serves its own copy, one
that answers the new value asked Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import jwt
import pytest
import redis
from flask import Flask

from tests.support.waiting import wait_until
from webapp import near_cache
from webapp.cache import RedisStore
from webapp.near_cache import NearCache

KEYS = ["gh:sess:a", "gh:user:b"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def behind_its_back(redis_url: str, key: str, value: bytes) -> None:
    """Change `key` in Redis without announcing it, as no writer of the service ever does."""
    redis.Redis.from_url(redis_url).set(key, value, ex=60)


@pytest.fixture(autouse=True)
def _empty_redis(redis_url: str) -> None:
    redis.Redis.from_url(redis_url).flushdb()


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStore]:
    made = RedisStore(redis_url, local_ttl=30)
    yield made
    made.init_app(None)


@pytest.fixture
def other_process(redis_url: str) -> RedisStore:
    """Another API process: its writes reach this one through the channel only."""
    return RedisStore(redis_url, local_ttl=30)


@pytest.fixture
def holding(redis_url: str, other_process: RedisStore) -> Iterator[Callable[..., NearCache]]:
    """A live copy that holds KEYS[0] = b"1" (its clock is `clock`, when given)."""
    made: list[NearCache] = []

    def build(ttl: float = 60, clock: Callable[[], float] = time.monotonic) -> NearCache:
        near = NearCache(redis_url, other_process.channel, ttl=ttl, timeout=0.5, clock=clock)
        made.append(near)
        wait_until(lambda: near.trusted)
        _, token = near.lookup(KEYS[:1])
        near.keep(token, KEYS[:1], [b"1"])
        return near

    yield build
    for near in made:
        near.close()


def live(store: RedisStore) -> RedisStore:
    assert store.near is not None
    wait_until(lambda: store.near.trusted)  # type: ignore[union-attr]
    return store


def test_a_value_read_from_redis_is_then_served_from_the_process(store, other_process, redis_url):
    other_process.set_many({KEYS[0]: b"1", KEYS[1]: b"{}"}, 60)
    live(store)
    assert store.get_hot(KEYS) == ([b"1", b"{}"], "redis")

    behind_its_back(redis_url, KEYS[0], b"changed")

    assert store.get_hot(KEYS) == ([b"1", b"{}"], "local")  # the process's own copy
    assert store.get_many(KEYS) == [b"changed", b"{}"]  # what Redis holds


def test_a_missing_key_is_never_kept(store, redis_url):
    live(store)
    assert store.get_hot(KEYS) == ([None, None], "redis")

    behind_its_back(redis_url, KEYS[0], b"1")

    assert store.get_hot(KEYS) == ([b"1", None], "redis")


def test_a_write_by_another_process_drops_the_copy_before_the_next_read(
    store, other_process, redis_url
):
    other_process.set_many({KEYS[0]: b"1"}, 60)
    live(store)
    store.get_hot(KEYS[:1])
    behind_its_back(redis_url, KEYS[0], b"unannounced")
    assert store.get_hot(KEYS[:1]) == ([b"1"], "local")

    other_process.set_many({KEYS[0]: b"0"}, 60)

    assert store.get_hot(KEYS[:1]) == ([b"0"], "redis")


def test_the_writer_drops_its_own_copy_at_once(store, redis_url):
    store.set_many({KEYS[0]: b"1"}, 60)
    live(store)
    store.get_hot(KEYS[:1])
    behind_its_back(redis_url, KEYS[0], b"unannounced")
    assert store.get_hot(KEYS[:1]) == ([b"1"], "local")

    store.set_many({KEYS[0]: b"0"}, 60, critical=True)

    assert store.get_hot(KEYS[:1])[0] == [b"0"]


def test_an_invalidation_replayed_after_an_outage_is_announced_too(store, other_process, redis_url):
    other_process.set_many({KEYS[0]: b"1"}, 60)
    live(store)
    store.get_hot(KEYS[:1])
    assert store.get_hot(KEYS[:1])[1] == "local"
    live_client = other_process.client
    other_process.client = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_timeout=0.1)
    other_process.set_many({KEYS[0]: b"0"}, 60, critical=True)  # Redis unreachable: kept
    other_process.client = live_client
    wait_until(lambda: other_process.available)  # its back-off has passed

    other_process.get_many(["gh:unrelated"])  # the next call replays (and publishes) first

    assert store.get_hot(KEYS[:1]) == ([b"0"], "redis")


def test_a_read_that_raced_an_invalidation_is_not_kept(redis_url, other_process):
    near = NearCache(redis_url, other_process.channel, ttl=30, timeout=0.5)
    wait_until(lambda: near.trusted)
    # A probe the copy holds: once it is dropped, the invalidation below has been applied.
    probe = "gh:sess:probe"
    _, probe_token = near.lookup([probe])
    near.keep(probe_token, [probe], [b"p"])
    assert near.lookup([probe]) == ([b"p"], None)
    values, token = near.lookup(KEYS[:1])
    assert values is None
    assert token is not None

    # Published while "our" MGET was in flight.
    other_process.set_many({KEYS[0]: b"0", probe: b"q"}, 60)
    wait_until(lambda: near.lookup([probe])[0] is None)
    near.keep(token, KEYS[:1], [b"1"])  # the stale answer arrives after the invalidation

    assert near.lookup(KEYS[:1])[0] is None
    near.close()


def test_a_lookup_during_another_threads_drain_waits_for_it(holding):
    """A drain may hold messages it has read from the socket but not applied yet."""
    near = holding()
    near.lookup(KEYS[:1])
    answers: list[object] = []
    with near._lock:  # another thread, draining
        reader = threading.Thread(target=lambda: answers.append(near.lookup(KEYS[:1])))
        reader.start()
        reader.join(0.2)
        assert answers == []
        near._forget(KEYS[:1])  # what the drain applies
    reader.join(10)

    [(values, token)] = answers
    assert values is None  # what the drain dropped is not served
    assert token is not None  # and Redis is read, its answer may be kept


def test_entries_expire_after_the_local_ttl(holding):
    clock = FakeClock()
    near = holding(ttl=5, clock=clock)
    assert near.lookup(KEYS[:1])[0] == [b"1"]

    clock.now += 0.9
    assert near.lookup(KEYS[:1])[0] == [b"1"]
    clock.now += 5
    assert near.lookup(KEYS[:1])[0] is None


def test_without_a_recent_answer_to_ping_nothing_is_served(holding):
    clock = FakeClock()
    near = holding(clock=clock)

    # A worker idle for longer than the trust window: what it holds may have missed messages.
    clock.now += near_cache.TRUST_WINDOW + 1
    assert near.lookup(KEYS[:1]) == (None, None)
    # The PING it sent on that lookup is answered: the copy is served again.
    wait_until(lambda: near.lookup(KEYS[:1])[0] == [b"1"])


def test_an_unanswered_ping_turns_the_copy_off(holding, monkeypatch):
    clock = FakeClock()
    near = holding(clock=clock)
    monkeypatch.setattr(near._pubsub, "ping", lambda: None)  # the PING is lost on the way

    clock.now += near_cache.PING_INTERVAL
    assert near.lookup(KEYS[:1])[0] == [b"1"]  # sent, still inside the trust window
    clock.now += near_cache.TRUST_WINDOW + 0.1

    assert near.lookup(KEYS[:1]) == (None, None)
    assert not near.trusted  # off until it subscribes again, after the back-off
    clock.now += near_cache.RETRY_SECONDS
    wait_until(lambda: near.trusted)
    assert near.lookup(KEYS[:1])[0] is None  # it starts empty: nothing from before the gap


def test_a_lost_connection_turns_the_copy_off_until_it_subscribes_again(holding, redis_url):
    clock = FakeClock()
    near = holding(clock=clock)
    admin = redis.Redis.from_url(redis_url)

    assert admin.client_kill_filter(_type="pubsub", skipme=True) >= 1
    wait_until(lambda: near.lookup(KEYS[:1]) == (None, None))
    assert not near.trusted  # no retry before the back-off

    clock.now += near_cache.RETRY_SECONDS
    wait_until(lambda: near.trusted)
    assert near.lookup(KEYS[:1])[0] is None  # it starts empty: nothing from before the gap


def test_a_reconnection_inside_the_client_counts_as_a_lost_connection(holding):
    clock = FakeClock()
    near = holding(clock=clock)
    connection = near._pubsub.connection
    # What redis-py does on its own after a socket error: reconnect and subscribe again.
    connection.disconnect()
    connection.connect()

    wait_until(lambda: near.lookup(KEYS[:1]) == (None, None))
    assert not near.trusted  # turned off, not resumed on the reconnected socket
    clock.now += near_cache.RETRY_SECONDS
    wait_until(lambda: near.trusted)
    assert near.lookup(KEYS[:1])[0] is None  # what it held before is gone


def test_without_redis_the_copy_stays_off_and_requests_do_not_wait(other_process, caplog):
    near = NearCache("redis://127.0.0.1:1/0", other_process.channel, ttl=60, timeout=0.2)

    assert near.lookup(KEYS[:1]) == (None, None)  # the subscription is tried off the request path
    wait_until(
        lambda: any("invalidation channel unavailable" in r.getMessage() for r in caplog.records)
    )
    assert near.lookup(KEYS[:1]) == (None, None)
    assert not near.trusted


def test_a_local_ttl_of_zero_turns_the_copy_off(redis_url):
    store = RedisStore(redis_url, local_ttl=0)
    store.set_many({KEYS[0]: b"1"}, 60)

    assert store.near is None
    assert store.get_hot(KEYS[:1]) == ([b"1"], "redis")
    assert store.get_hot(KEYS[:1]) == ([b"1"], "redis")


# --- through the API: two apps on one database and one Redis stand for two processes ----------


@pytest.fixture
def second_process(app: Flask, make_app: Callable[..., Flask]) -> Iterator[Flask]:
    other = make_app()
    yield other
    other.extensions["gatehouse_redis"].init_app(None)


def warm(process: Flask, member, redis_url: str) -> None:
    """Serve /me from this process until it answers from its own copy."""
    store: RedisStore = process.extensions["gatehouse_redis"]
    client = process.test_client()
    live(store)
    assert client.get("/api/v1/users/me", headers=member.headers).status_code == 200
    assert client.get("/api/v1/users/me", headers=member.headers).status_code == 200
    # The member's own state: its session (the token's `sid`) and its user.
    session_id = jwt.decode(member.access_token, options={"verify_signature": False})["sid"]
    keys = [f"gh:sess:{session_id}", f"gh:user:{member.id}"]
    assert all(redis.Redis.from_url(redis_url).exists(key) for key in keys)
    values, source = store.get_hot(keys)
    assert source == "local", "the session state is held by the process"
    assert values is not None


def test_a_logout_in_one_process_is_seen_by_the_next_request_in_another(
    client, second_process, member, redis_url
):
    warm(second_process, member, redis_url)

    assert client.post("/api/v1/auth/logout", headers=member.headers).status_code == 204

    other = second_process.test_client()
    assert other.get("/api/v1/users/me", headers=member.headers).status_code == 401


def test_a_role_change_in_one_process_is_seen_by_the_next_request_in_another(
    client, second_process, member, admin, redis_url
):
    warm(second_process, member, redis_url)

    changed = client.put(
        f"/api/v1/users/{member.id}/role", json={"role": "admin"}, headers=admin.headers
    )

    assert changed.status_code == 200
    other = second_process.test_client()
    assert other.get("/api/v1/users/me", headers=member.headers).json["role"] == "admin"


def test_a_deactivation_in_one_process_is_seen_by_the_next_request_in_another(
    client, second_process, member, admin, redis_url
):
    warm(second_process, member, redis_url)

    response = client.patch(
        f"/api/v1/users/{member.id}", json={"active": False}, headers=admin.headers
    )

    assert response.status_code == 200
    other = second_process.test_client()
    assert other.get("/api/v1/users/me", headers=member.headers).status_code == 401
