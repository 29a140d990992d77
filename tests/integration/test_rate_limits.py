"""Rate limits: RateLimit-* headers, 429 problems with Retry-After, budgets per user or per client
IP (X-Forwarded-For only through trusted proxies), and requests still served with Redis down."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from flask import Flask

from webapp.extensions import limiter
from webapp.http.problems import PROBLEM_MIMETYPE

LIMITS = {"ratelimit_enabled": True, "ratelimit_default": "3 per minute"}
AUTH_LIMITS = {**LIMITS, "ratelimit_auth": "2 per minute"}
ME = "/api/v1/users/me"
DEAD_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture
def limited(app: Flask, redis_url: str, make_app: Callable[..., Flask]) -> Callable:
    """Build rate-limited apps with empty budgets."""
    redis.Redis.from_url(redis_url).flushdb()

    def build(**overrides: object) -> Flask:
        # The limiter is one object per process and remembers that a previous app's storage
        # died (it then counts in memory until its own health check succeeds). A process runs
        # one app in production; tests build many, so each new one starts trusting its storage.
        limiter._storage_dead = False
        return make_app(**{**AUTH_LIMITS, **overrides})

    return build


def test_responses_carry_ratelimit_headers(limited, member):
    client = limited().test_client()
    first = client.get(ME, headers=member.headers)
    second = client.get(ME, headers=member.headers)
    assert first.status_code == second.status_code == 200
    assert first.headers["RateLimit-Limit"] == "3"
    assert first.headers["RateLimit-Remaining"] == "2"
    assert second.headers["RateLimit-Remaining"] == "1"
    assert 0 <= int(first.headers["RateLimit-Reset"]) <= 60


def test_each_app_enforces_its_own_default_limit(limited):
    # The limiter object is shared by every app in the process; the limit must not be.
    roomy = limited(ratelimit_default="10 per minute").test_client()
    tight = limited().test_client()
    assert tight.get("/api/openapi.json").headers["RateLimit-Limit"] == "3"
    assert roomy.get("/api/openapi.json").headers["RateLimit-Limit"] == "10"


def test_an_app_with_rate_limits_off_stays_unlimited_beside_one_with_them_on(limited):
    # The limiter object is shared by every app in the process; enabling it for one app must not
    # start limiting another app that has rate limits turned off.
    unlimited = limited(ratelimit_enabled=False).test_client()
    limited().test_client().get("/api/openapi.json")
    attempt = {"email": "nobody@example.com", "password": "not-the-password-1"}
    statuses = {unlimited.post("/api/v1/auth/login", json=attempt).status_code for _ in range(4)}
    assert statuses == {401}


def test_exceeding_the_limit_gives_a_429_problem_with_retry_after(limited, member):
    client = limited().test_client()
    for _ in range(3):
        assert client.get(ME, headers=member.headers).status_code == 200
    response = client.get(ME, headers=member.headers)
    assert response.status_code == 429
    assert response.mimetype == PROBLEM_MIMETYPE
    assert response.json["type"].endswith("/problems/rate-limited")
    assert response.json["status"] == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert response.headers["RateLimit-Remaining"] == "0"
    assert response.headers["X-Request-ID"] == response.json["request_id"]


def test_authenticated_users_each_have_their_own_budget(limited, make_user):
    client = limited().test_client()
    alice, bob = make_user(), make_user()
    for _ in range(3):
        assert client.get(ME, headers=alice.headers).status_code == 200
    assert client.get(ME, headers=alice.headers).status_code == 429
    # Same client IP, another user: a fresh budget.
    assert client.get(ME, headers=bob.headers).status_code == 200


def test_a_forged_token_does_not_draw_on_the_users_budget(limited, member):
    client = limited().test_client()
    forged = {"Authorization": "Bearer " + member.access_token[:-4] + "AAAA"}
    for _ in range(3):
        assert client.get(ME, headers=forged).status_code == 401
    assert client.get(ME, headers=forged).status_code == 429
    # The forged requests were counted against the IP, not against the real user.
    assert client.get(ME, headers=member.headers).status_code == 200


def test_anonymous_clients_are_limited_per_ip(limited):
    client = limited().test_client()
    here, there = {"REMOTE_ADDR": "198.51.100.7"}, {"REMOTE_ADDR": "198.51.100.8"}
    for _ in range(3):
        assert client.get(ME, environ_base=here).status_code == 401
    assert client.get(ME, environ_base=here).status_code == 429
    assert client.get(ME, environ_base=there).status_code == 401


def test_without_trusted_proxies_x_forwarded_for_is_ignored(limited):
    client = limited(trusted_proxies=0).test_client()
    for n in range(3):
        spoofed = {"X-Forwarded-For": f"203.0.113.{n}"}
        assert client.get(ME, headers=spoofed).status_code == 401
    # A new spoofed address does not buy a new budget.
    assert client.get(ME, headers={"X-Forwarded-For": "203.0.113.99"}).status_code == 429


def test_with_one_trusted_proxy_x_forwarded_for_names_the_client(limited):
    client = limited(trusted_proxies=1).test_client()
    first = {"X-Forwarded-For": "203.0.113.1"}
    for _ in range(3):
        assert client.get(ME, headers=first).status_code == 401
    assert client.get(ME, headers=first).status_code == 429
    assert client.get(ME, headers={"X-Forwarded-For": "203.0.113.2"}).status_code == 401


def test_with_one_trusted_proxy_only_the_last_hop_counts(limited):
    client = limited(trusted_proxies=1).test_client()
    # The client prepends fake hops; the proxy appends the real address, which is what counts.
    for n in range(3):
        chain = {"X-Forwarded-For": f"10.9.9.{n}, 203.0.113.5"}
        assert client.get(ME, headers=chain).status_code == 401
    assert client.get(ME, headers={"X-Forwarded-For": "10.9.9.77, 203.0.113.5"}).status_code == 429


def test_password_hashing_endpoints_have_a_tighter_per_ip_budget(limited):
    client = limited().test_client()
    attempt = {"email": "nobody@example.com", "password": "not-the-password-1"}
    for _ in range(2):
        assert client.post("/api/v1/auth/login", json=attempt).status_code == 401
    response = client.post("/api/v1/auth/login", json=attempt)
    assert response.status_code == 429
    assert response.json["type"].endswith("/problems/rate-limited")
    assert int(response.headers["Retry-After"]) >= 1


def test_operational_endpoints_are_not_rate_limited(limited):
    client = limited().test_client()
    for path in ("/health", "/.well-known/jwks.json"):
        statuses = {client.get(path).status_code for _ in range(5)}
        assert statuses == {200}, path


def test_with_redis_down_requests_are_still_served_and_limited_in_memory(limited, member):
    client = limited(redis_url=DEAD_REDIS).test_client()
    statuses = [client.get(ME, headers=member.headers).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


def test_an_app_built_after_a_redis_outage_counts_in_redis_again(limited, redis_url, member):
    limited(redis_url=DEAD_REDIS).test_client().get(ME, headers=member.headers)
    client = limited().test_client()
    assert client.get(ME, headers=member.headers).status_code == 200
    keys = redis.Redis.from_url(redis_url).keys("*gh-rl*")
    assert keys, "the request was counted in memory, not in Redis"
