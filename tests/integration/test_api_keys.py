"""API keys end to end: created with the secret shown once, used through `X-API-Key` as the owner
within the key's scopes, rotated with a grace period, revoked, expired — on the real PostgreSQL and
Redis. Time is moved by rewriting the stored timestamps, never by sleeping."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from flask import Flask
from sqlalchemy import select, text, update

from tests.support.accounts import Account
from tests.support.problems import assert_problem
from webapp.apikeys import service as apikeys
from webapp.apikeys.models import ApiKey
from webapp.extensions import db
from webapp.http.idempotency import IdempotencyRecord

KEYS = "/api/v1/api-keys/"


def create_key(client, account: Account, scopes: list[str], **extra: Any) -> dict[str, Any]:
    body = {"name": "deploy bot", "scopes": scopes, **extra}
    response = client.post(KEYS, json=body, headers=account.headers)
    assert response.status_code == 201, response.get_json()
    return response.json


def with_key(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def evict_key_cache(app: Flask, redis_url: str) -> None:
    """The cache holds the same timestamps as the rows: had time really passed, it would have
    passed for both. After rewriting a row, drop the cached copies (Redis and the process's)."""
    client = redis.Redis.from_url(redis_url)
    for name in client.scan_iter("gh:apikey:*"):
        client.delete(name)
    app.extensions["gatehouse_redis"].forget_local()


def move_key(app: Flask, redis_url: str, key_id: str, **values: Any) -> None:
    with app.app_context():
        db.session.execute(update(ApiKey).where(ApiKey.id == uuid.UUID(key_id)).values(**values))
        db.session.commit()
        db.session.remove()
    evict_key_cache(app, redis_url)


def key_row(app: Flask, key_id: str) -> ApiKey:
    with app.app_context():
        row = db.session.get(ApiKey, uuid.UUID(key_id))
        assert row is not None
        db.session.expunge(row)
        db.session.remove()
        return row


# --- creation and format -------------------------------------------------------------------------


def test_a_created_key_is_shown_once_in_its_fixed_format_and_stored_only_as_a_hash(
    app, client, admin
):
    created = create_key(client, admin, ["users:list"])

    key = created["key"]
    assert key.startswith("gh_live_")
    assert apikeys.parse_key(key) is not None
    assert created["prefix"] == key[: len(created["prefix"])]
    assert created["prefix"].startswith("gh_live_")
    assert created["status"] == "active"
    assert created["scopes"] == ["users:list"]
    row = key_row(app, created["id"])
    secret = key.rsplit("_", 1)[1]
    assert secret not in (row.secret_hash, row.public_id)
    assert len(row.secret_hash) == 64
    with app.app_context():
        assert row.secret_hash == apikeys.hash_secret(row.public_id, secret)


def test_the_response_to_a_creation_points_at_the_key(client, admin):
    response = client.post(
        KEYS, json={"name": "ci", "scopes": ["users:read"]}, headers=admin.headers
    )

    assert response.status_code == 201
    assert response.headers["Location"].endswith(f"/api/v1/api-keys/{response.json['id']}")
    again = client.get(response.headers["Location"], headers=admin.headers)
    assert again.status_code == 200
    assert again.headers["ETag"] == response.headers["ETag"]
    assert "key" not in again.json


def test_a_key_authenticates_as_its_owner_within_its_scope(client, admin):
    key = create_key(client, admin, ["users:list", "users:read"])["key"]

    listing = client.get("/api/v1/users/", headers=with_key(key))
    mine = client.get(f"/api/v1/users/{admin.id}", headers=with_key(key))

    assert listing.status_code == 200
    assert admin.email in [u["email"] for u in listing.json["items"]]
    assert mine.status_code == 200
    assert mine.json["email"] == admin.email


def test_a_permission_outside_the_keys_scopes_is_403(client, admin):
    key = create_key(client, admin, ["users:read"])["key"]

    response = client.get("/api/v1/users/", headers=with_key(key))

    body = assert_problem(response, 403, "insufficient-scope")
    assert "users:list" in body["detail"]


def test_a_route_that_does_not_accept_api_keys_is_403(client, admin):
    key = create_key(client, admin, sorted(apikeys.rbac.API_KEY_PERMISSIONS))["key"]

    for method, path in [
        ("GET", "/api/v1/users/me"),
        ("POST", KEYS),
        ("GET", "/api/v1/auth/sessions"),
        ("PUT", f"/api/v1/users/{admin.id}/role"),
    ]:
        response = client.open(path, method=method, json={}, headers=with_key(key))
        assert_problem(response, 403, "api-key-not-allowed")


def test_a_key_never_exceeds_its_owners_role(client, member):
    key = create_key(client, member, ["users:read"])["key"]

    own = client.get(f"/api/v1/users/{member.id}", headers=with_key(key))
    other = client.get(f"/api/v1/users/{uuid.uuid4()}", headers=with_key(key))

    assert own.status_code == 200
    assert_problem(other, 403, "forbidden")


def test_a_scope_the_owners_role_does_not_hold_cannot_be_granted(client, member):
    response = client.post(
        KEYS, json={"name": "x", "scopes": ["users:list"]}, headers=member.headers
    )

    body = assert_problem(response, 422, "invalid-scope")
    assert "users:list" in body["errors"]["scopes"][0]


@pytest.mark.parametrize("scope", ["users:role", "users:mfa-reset", "sessions:manage", "nope"])
def test_permissions_not_usable_by_keys_are_not_scopes(client, admin, scope):
    response = client.post(KEYS, json={"name": "x", "scopes": [scope]}, headers=admin.headers)

    body = assert_problem(response, 422, "validation-failed")
    assert "scopes.0" in body["errors"]


def test_a_key_cannot_be_created_already_expired(client, admin):
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    response = client.post(
        KEYS,
        json={"name": "x", "scopes": ["users:read"], "expires_at": past},
        headers=admin.headers,
    )

    assert_problem(response, 422, "validation-failed")


def test_the_number_of_active_keys_per_user_is_capped(make_app, make_user):
    app = make_app(api_key_max_per_user=1)
    client = app.test_client()
    owner = make_user("admin")
    create_key(client, owner, ["users:read"])

    response = client.post(
        KEYS, json={"name": "two", "scopes": ["users:read"]}, headers=owner.headers
    )

    assert_problem(response, 409, "api-key-limit")


# --- secrecy -------------------------------------------------------------------------------------


def test_a_key_never_appears_in_responses_after_creation_nor_in_logs(app, client, admin, caplog):
    caplog.set_level(logging.DEBUG)
    created = create_key(client, admin, ["users:list", "audit:read"])
    key, secret = created["key"], created["key"].rsplit("_", 1)[1]
    responses = [
        client.get(KEYS, headers=admin.headers),
        client.get(f"{KEYS}{created['id']}", headers=admin.headers),
        client.get("/api/v1/users/", headers=with_key(key)),
        client.get("/api/v1/audit-events/", headers=with_key(key)),
        client.get("/api/v1/users/", headers=with_key(key[:-1] + "a")),
    ]
    rotated = client.post(f"{KEYS}{created['id']}/rotate", headers=admin.headers)
    responses.append(client.get(KEYS, headers=admin.headers))

    for response in responses:
        assert secret not in response.get_data(as_text=True)
    assert secret not in rotated.get_data(as_text=True)
    assert rotated.json["key"] != key
    assert caplog.records, "nothing was logged at all"
    assert secret not in caplog.text
    assert secret not in rotated.json["key"]
    with app.app_context():
        dump = " ".join(
            str(v) for row in db.session.execute(text("SELECT * FROM api_keys")) for v in row
        )
        events = " ".join(
            str(v) for row in db.session.execute(text("SELECT * FROM audit_events")) for v in row
        )
        db.session.remove()
    assert secret not in dump
    assert secret not in events


def test_a_retried_creation_returns_the_same_key_which_is_encrypted_at_rest(app, client, admin):
    headers = {**admin.headers, "Idempotency-Key": "create-deploy-key"}
    body = {"name": "ci", "scopes": ["users:read"]}

    first = client.post(KEYS, json=body, headers=headers)
    again = client.post(KEYS, json=body, headers=headers)

    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json["key"] == first.json["key"]
    with app.app_context():
        [stored] = db.session.scalars(select(IdempotencyRecord.response_body)).all()
        db.session.remove()
    assert stored.startswith("v1.")
    assert first.json["key"].rsplit("_", 1)[1] not in stored


# --- lifecycle -----------------------------------------------------------------------------------


def test_rotation_keeps_both_secrets_valid_inside_the_grace_window_and_only_the_new_after(
    app, client, admin, redis_url
):
    created = create_key(client, admin, ["users:list"])
    old = created["key"]

    rotated = client.post(f"{KEYS}{created['id']}/rotate", headers=admin.headers)

    assert rotated.status_code == 200
    new = rotated.json["key"]
    assert new != old
    assert rotated.json["prefix"] == created["prefix"]
    assert rotated.json["previous_secret_expires_at"] is not None
    assert client.get("/api/v1/users/", headers=with_key(old)).status_code == 200
    assert client.get("/api/v1/users/", headers=with_key(new)).status_code == 200

    past = datetime.now(UTC) - timedelta(seconds=1)
    move_key(app, redis_url, created["id"], previous_expires_at=past)

    assert_problem(client.get("/api/v1/users/", headers=with_key(old)), 401, "invalid-api-key")
    assert client.get("/api/v1/users/", headers=with_key(new)).status_code == 200


def test_without_a_grace_period_the_old_secret_stops_at_once(make_app, make_user):
    app = make_app(api_key_rotation_grace=0)
    client = app.test_client()
    owner = make_user("admin")
    created = create_key(client, owner, ["users:list"])

    new = client.post(f"{KEYS}{created['id']}/rotate", headers=owner.headers).json["key"]

    assert_problem(
        client.get("/api/v1/users/", headers=with_key(created["key"])), 401, "invalid-api-key"
    )
    assert client.get("/api/v1/users/", headers=with_key(new)).status_code == 200


def test_a_revoked_key_is_rejected_on_the_next_request(client, admin):
    created = create_key(client, admin, ["users:list"])
    assert client.get("/api/v1/users/", headers=with_key(created["key"])).status_code == 200

    response = client.delete(f"{KEYS}{created['id']}", headers=admin.headers)

    assert response.status_code == 204
    assert_problem(
        client.get("/api/v1/users/", headers=with_key(created["key"])), 401, "invalid-api-key"
    )
    listed = client.get(f"{KEYS}?status=revoked", headers=admin.headers).json["items"]
    assert [k["id"] for k in listed] == [created["id"]]
    assert listed[0]["status"] == "revoked"
    assert client.delete(f"{KEYS}{created['id']}", headers=admin.headers).status_code == 204


def test_a_revoked_key_cannot_be_rotated_back_to_life(client, admin):
    created = create_key(client, admin, ["users:list"])
    client.delete(f"{KEYS}{created['id']}", headers=admin.headers)

    response = client.post(f"{KEYS}{created['id']}/rotate", headers=admin.headers)

    assert_problem(response, 409, "api-key-inactive")


def test_an_expired_key_is_rejected(app, client, admin, redis_url):
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    created = create_key(client, admin, ["users:list"], expires_at=soon)
    assert client.get("/api/v1/users/", headers=with_key(created["key"])).status_code == 200

    move_key(app, redis_url, created["id"], expires_at=datetime.now(UTC) - timedelta(seconds=1))

    assert_problem(
        client.get("/api/v1/users/", headers=with_key(created["key"])), 401, "invalid-api-key"
    )
    listed = client.get(f"{KEYS}?status=expired", headers=admin.headers).json["items"]
    assert [k["status"] for k in listed] == ["expired"]


def test_a_key_stops_working_when_its_owner_is_deactivated_or_deleted(client, make_user):
    admin = make_user("admin")
    owner = make_user("admin")
    key = create_key(client, owner, ["users:list"])["key"]
    assert client.get("/api/v1/users/", headers=with_key(key)).status_code == 200

    client.patch(f"/api/v1/users/{owner.id}", json={"active": False}, headers=admin.headers)
    assert_problem(client.get("/api/v1/users/", headers=with_key(key)), 401, "invalid-api-key")

    client.patch(f"/api/v1/users/{owner.id}", json={"active": True}, headers=admin.headers)
    assert client.get("/api/v1/users/", headers=with_key(key)).status_code == 200

    assert client.delete(f"/api/v1/users/{owner.id}", headers=admin.headers).status_code == 204
    assert_problem(client.get("/api/v1/users/", headers=with_key(key)), 401, "invalid-api-key")


def test_a_role_change_narrows_what_a_key_can_do_on_the_next_request(client, make_user):
    admin = make_user("admin")
    owner = make_user("admin")
    key = create_key(client, owner, ["users:list"])["key"]

    client.put(f"/api/v1/users/{owner.id}/role", json={"role": "user"}, headers=admin.headers)

    assert_problem(client.get("/api/v1/users/", headers=with_key(key)), 403, "forbidden")


@pytest.mark.parametrize(
    "presented",
    ["", "nonsense", "gh_live_0123456789abcdef_" + "a" * 52, "gh_live_zz_" + "a" * 52],
)
def test_malformed_or_unknown_keys_are_401_with_a_challenge(client, presented):
    response = client.get("/api/v1/users/", headers={"X-API-Key": presented})

    assert_problem(response, 401, "invalid-api-key")
    assert "ApiKey" in response.headers["WWW-Authenticate"]


def test_a_wrong_secret_for_a_real_public_id_is_401(client, admin):
    key = create_key(client, admin, ["users:list"])["key"]
    wrong = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")

    assert_problem(client.get("/api/v1/users/", headers=with_key(wrong)), 401, "invalid-api-key")


def test_a_bearer_token_and_an_api_key_together_are_refused(client, admin):
    key = create_key(client, admin, ["users:list"])["key"]

    response = client.get("/api/v1/users/", headers={**admin.headers, **with_key(key)})

    assert_problem(response, 400, "ambiguous-credentials")


def test_a_user_sees_and_manages_only_their_own_keys(client, make_user):
    alice, bob = make_user(), make_user()
    alices = create_key(client, alice, ["users:read"])

    assert client.get(KEYS, headers=bob.headers).json["items"] == []
    assert_problem(client.get(f"{KEYS}{alices['id']}", headers=bob.headers), 404, "not-found")
    assert_problem(client.delete(f"{KEYS}{alices['id']}", headers=bob.headers), 404, "not-found")
    assert_problem(
        client.post(f"{KEYS}{alices['id']}/rotate", headers=bob.headers), 404, "not-found"
    )


def test_the_list_shows_prefixes_pages_and_filters(client, admin):
    made = [create_key(client, admin, ["users:read"], name=f"k{i}")["id"] for i in range(3)]

    first = client.get(f"{KEYS}?limit=2", headers=admin.headers)
    second = client.get(f"{KEYS}?limit=2&cursor={first.json['next_cursor']}", headers=admin.headers)

    ids = [k["id"] for k in first.json["items"] + second.json["items"]]
    assert sorted(ids) == sorted(made)
    assert 'rel="next"' in first.headers["Link"]
    assert all(k["prefix"].startswith("gh_live_") for k in first.json["items"])
    assert all("key" not in k for k in first.json["items"])


def test_conditional_requests_on_a_key(client, admin):
    created = create_key(client, admin, ["users:read"])
    url = f"{KEYS}{created['id']}"
    etag = client.get(url, headers=admin.headers).headers["ETag"]

    cached = client.get(url, headers={**admin.headers, "If-None-Match": etag})
    stale = client.delete(url, headers={**admin.headers, "If-Match": '"not-it"'})
    rotate_stale = client.post(f"{url}/rotate", headers={**admin.headers, "If-Match": '"x"'})

    assert cached.status_code == 304
    assert_problem(stale, 412, "precondition-failed")
    assert_problem(rotate_stale, 412, "precondition-failed")
    assert client.delete(url, headers={**admin.headers, "If-Match": etag}).status_code == 204


def test_every_create_rotate_and_revoke_is_audited(client, admin):
    created = create_key(client, admin, ["users:read"])
    client.post(f"{KEYS}{created['id']}/rotate", headers=admin.headers)
    client.delete(f"{KEYS}{created['id']}", headers=admin.headers)

    events = client.get(
        f"/api/v1/audit-events/?target_id={created['id']}", headers=admin.headers
    ).json["items"]

    assert sorted(e["action"] for e in events) == [
        "api_key.created",
        "api_key.revoked",
        "api_key.rotated",
    ]
    assert all(e["actor_id"] == str(admin.id) for e in events)
    created_event = next(e for e in events if e["action"] == "api_key.created")
    assert created_event["details"]["prefix"] == created["prefix"]
    assert created_event["details"]["scopes"] == ["users:read"]


# --- last use ------------------------------------------------------------------------------------


def test_last_use_is_batched_not_written_on_every_request(app, client, admin):
    created = create_key(client, admin, ["users:list"])
    key = created["key"]

    client.get("/api/v1/users/", headers=with_key(key))  # takes the flush lease, writes
    first = key_row(app, created["id"]).last_used_at
    assert first is not None
    for _ in range(3):
        client.get(
            "/api/v1/users/", headers=with_key(key), environ_base={"REMOTE_ADDR": "10.9.8.7"}
        )

    assert key_row(app, created["id"]).last_used_at == first  # batched, not yet written
    listed = client.get(KEYS, headers=admin.headers).json["items"][0]  # the list flushes first
    assert listed["last_used_ip"] == "10.9.8.7"
    assert datetime.fromisoformat(listed["last_used_at"]) > first
    assert key_row(app, created["id"]).last_used_ip == "10.9.8.7"


def test_keys_keep_working_without_redis_and_last_use_is_then_written_sparingly(
    make_app, app, client, admin
):
    created = create_key(client, admin, ["users:list"])
    without_redis = make_app(redis_url="redis://127.0.0.1:1/0").test_client()

    for _ in range(3):
        assert (
            without_redis.get("/api/v1/users/", headers=with_key(created["key"])).status_code == 200
        )

    assert key_row(app, created["id"]).last_used_at is not None


def test_the_rate_limiter_counts_a_key_against_its_owner(app, client, admin):
    from webapp.http.ratelimit import rate_limit_key

    key = create_key(client, admin, ["users:list"])["key"]

    with app.test_request_context("/api/v1/users/", headers=with_key(key)):
        assert rate_limit_key() == f"user:{admin.id}"
    with app.test_request_context("/api/v1/users/", headers=with_key("gh_live_bad")):
        assert rate_limit_key().startswith("ip:")


def test_rate_limits_apply_to_key_requests(make_app, make_user):
    app = make_app(ratelimit_enabled=True, ratelimit_default="2 per minute")
    client = app.test_client()
    owner = make_user("admin")
    key = create_key(client, owner, ["users:list"])["key"]

    statuses = [client.get("/api/v1/users/", headers=with_key(key)).status_code for _ in range(3)]

    assert statuses == [200, 200, 429]
