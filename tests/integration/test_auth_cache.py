"""The per-request auth state: role changes, deactivation and deletion take effect on the next
request (cache invalidated on write), and with Redis down the database answers (never fail open).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import bcrypt
import jwt
import pytest
import redis
from flask import Flask
from sqlalchemy import update

from tests.support.accounts import STRONG_PASSWORD
from webapp.extensions import db
from webapp.users.models import User

DEAD_REDIS = "redis://127.0.0.1:1/0"
USERS = "/api/v1/users/"


def me(client, token: str):
    return client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})


def sid(token: str) -> str:
    return jwt.decode(token, options={"verify_signature": False})["sid"]


def login(client, email: str, password: str = STRONG_PASSWORD):
    return client.post("/api/v1/auth/login", json={"email": email, "password": password})


@pytest.fixture
def live_redis(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


@pytest.fixture
def redis_down(app: Flask, make_app: Callable[..., Flask]) -> Callable[..., Flask]:
    """Build apps whose Redis is unreachable (the Redis store is per app)."""

    def build(**overrides) -> Flask:
        return make_app(redis_url=DEAD_REDIS, **overrides)

    return build


# --- changes take effect on the next request -----------------------------------------------


def test_a_role_granted_by_an_admin_applies_to_the_users_current_token(client, admin, member):
    assert client.get(USERS, headers=member.headers).status_code == 403

    granted = client.put(f"{USERS}{member.id}/role", json={"role": "admin"}, headers=admin.headers)

    assert granted.status_code == 200
    assert client.get(USERS, headers=member.headers).status_code == 200
    assert me(client, member.access_token).json["role"] == "admin"


def test_a_role_taken_away_applies_to_the_users_current_token(client, make_user, admin):
    other_admin = make_user("admin")
    assert client.get(USERS, headers=other_admin.headers).status_code == 200

    client.put(f"{USERS}{other_admin.id}/role", json={"role": "user"}, headers=admin.headers)

    assert client.get(USERS, headers=other_admin.headers).status_code == 403


def test_a_deactivated_user_is_refused_at_once(client, admin, member):
    assert me(client, member.access_token).status_code == 200

    response = client.patch(f"{USERS}{member.id}", json={"active": False}, headers=admin.headers)

    assert response.status_code == 200
    refused = me(client, member.access_token)
    assert refused.status_code == 401
    assert "WWW-Authenticate" in refused.headers
    refreshed = client.post("/api/v1/auth/refresh", json={"refresh_token": member.refresh_token})
    assert refreshed.status_code == 401
    assert login(client, member.email).status_code == 401


def test_reactivating_a_user_does_not_revive_their_old_sessions(client, admin, member):
    client.patch(f"{USERS}{member.id}", json={"active": False}, headers=admin.headers)

    client.patch(f"{USERS}{member.id}", json={"active": True}, headers=admin.headers)

    assert me(client, member.access_token).status_code == 401
    fresh = login(client, member.email)
    assert fresh.status_code == 200
    assert me(client, fresh.json["access_token"]).status_code == 200


def test_a_deleted_user_is_refused_at_once(client, admin, member):
    assert me(client, member.access_token).status_code == 200

    assert client.delete(f"{USERS}{member.id}", headers=admin.headers).status_code == 204

    assert me(client, member.access_token).status_code == 401


def test_an_update_is_visible_on_the_next_read_of_me(client, member):
    assert me(client, member.access_token).json["name"] == "Test User"

    client.patch("/api/v1/users/me", json={"name": "Renamed"}, headers=member.headers)

    assert me(client, member.access_token).json["name"] == "Renamed"


def test_the_auth_state_is_cached_in_redis_with_a_ttl(client, live_redis, member):
    assert me(client, member.access_token).status_code == 200

    session_key = f"gh:sess:{sid(member.access_token)}"
    user_key = f"gh:user:{member.id}"
    assert live_redis.get(session_key) == b"1"
    assert json.loads(live_redis.get(user_key))["role"] == "user"
    assert 0 < live_redis.ttl(session_key) <= 300
    assert 0 < live_redis.ttl(user_key) <= 300


def test_a_logout_overwrites_the_cached_session_state(client, live_redis, member):
    me(client, member.access_token)
    session_key = f"gh:sess:{sid(member.access_token)}"
    assert live_redis.get(session_key) == b"1"

    client.post("/api/v1/auth/logout", headers=member.headers)

    assert live_redis.get(session_key) == b"0"
    assert live_redis.ttl(session_key) >= 900


def test_an_emptied_cache_is_refilled_from_the_database(client, live_redis, member):
    client.post("/api/v1/auth/logout", headers=member.headers)
    live_redis.flushdb()

    assert me(client, member.access_token).status_code == 401
    assert live_redis.get(f"gh:sess:{sid(member.access_token)}") == b"0"


# --- Redis down: the database answers -------------------------------------------------------


def test_with_redis_down_login_and_me_still_work(redis_down, make_user):
    client = redis_down().test_client()
    account = make_user(login=False)

    response = login(client, account.email)

    assert response.status_code == 200
    read = me(client, response.json["access_token"])
    assert read.status_code == 200
    assert read.json["id"] == str(account.id)


def test_with_redis_down_refresh_still_rotates_and_detects_reuse(redis_down, make_user):
    client = redis_down().test_client()
    account = make_user(login=False)
    pair = login(client, account.email).json

    rotated = client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    reused = client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})

    assert rotated.status_code == 200
    assert reused.status_code == 401
    assert me(client, rotated.json["access_token"]).status_code == 401


def test_with_redis_down_a_logged_out_token_is_refused(redis_down, make_user):
    client = redis_down().test_client()
    account = make_user(login=False)
    token = login(client, account.email).json["access_token"]
    assert me(client, token).status_code == 200

    logout = client.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {token}"})
    assert logout.status_code == 204

    assert me(client, token).status_code == 401


def test_a_session_cached_as_live_is_refused_once_revoked_during_an_outage(
    client, live_redis, redis_down, member
):
    assert me(client, member.access_token).status_code == 200
    assert live_redis.get(f"gh:sess:{sid(member.access_token)}") == b"1"
    down = redis_down().test_client()

    assert down.post("/api/v1/auth/logout", headers=member.headers).status_code == 204

    assert me(down, member.access_token).status_code == 401


def test_with_redis_down_deactivation_and_role_changes_apply_at_once(redis_down, admin, make_user):
    client = redis_down().test_client()
    promoted, disabled = make_user(), make_user()

    client.put(f"{USERS}{promoted.id}/role", json={"role": "admin"}, headers=admin.headers)
    client.patch(f"{USERS}{disabled.id}", json={"active": False}, headers=admin.headers)

    assert client.get(USERS, headers=promoted.headers).status_code == 200
    assert me(client, disabled.access_token).status_code == 401


def test_with_redis_down_the_account_lockout_still_holds(redis_down, make_user):
    client = redis_down(lockout_threshold=2).test_client()
    account = make_user(login=False)
    for _ in range(2):
        assert login(client, account.email, "wrong-Password-but-long-77").status_code == 401

    locked = login(client, account.email)

    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) > 0


def test_a_login_that_resets_the_failure_count_publishes_the_new_version(client, member):
    assert me(client, member.access_token).status_code == 200  # the snapshot is cached
    assert login(client, member.email, "not-the-password-at-all").status_code == 401

    token = login(client, member.email).json["access_token"]

    cached = me(client, token).headers["ETag"]
    stored = client.get(f"{USERS}{member.id}", headers={"Authorization": f"Bearer {token}"})
    assert cached == stored.headers["ETag"]


def test_a_login_that_upgrades_a_bcrypt_hash_publishes_the_new_version(client, app, member):
    legacy = bcrypt.hashpw(STRONG_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    with app.app_context():
        db.session.execute(update(User).where(User.id == member.id).values(password_hash=legacy))
        db.session.commit()
        db.session.remove()
    assert me(client, member.access_token).status_code == 200  # the snapshot is cached

    token = login(client, member.email).json["access_token"]

    cached = me(client, token).headers["ETag"]
    stored = client.get(f"{USERS}{member.id}", headers={"Authorization": f"Bearer {token}"})
    assert cached == stored.headers["ETag"]


def test_a_plain_login_leaves_the_cached_user_as_it_is(client, live_redis, member):
    assert me(client, member.access_token).status_code == 200
    before = live_redis.get(f"gh:user:{member.id}")
    live_redis.set(f"gh:user:{member.id}", before, keepttl=True)  # unchanged, just read back

    assert login(client, member.email).status_code == 200

    assert live_redis.get(f"gh:user:{member.id}") == before
