"""Idempotency-Key on creating POSTs: POST /api/v1/users/ (admin) and /api/v1/auth/register."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import func, select, update

from tests.support.accounts import STRONG_PASSWORD
from webapp.audit.models import AuditEvent
from webapp.config import settings_of
from webapp.db import utcnow
from webapp.extensions import db
from webapp.http.idempotency_records import IdempotencyRecord
from webapp.users.models import User

USERS = "/api/v1/users/"
REGISTER = "/api/v1/auth/register"


def _body(email="idem@example.com", **extra):
    return {"email": email, "name": "Idem Potent", "password": STRONG_PASSWORD, **extra}


def _keyed(headers, key):
    return {**headers, "Idempotency-Key": key}


def _users_with_email(app, email: str) -> int:
    with app.app_context():
        count = db.session.scalar(
            select(func.count()).select_from(User).where(func.lower(User.email) == email.lower())
        )
        db.session.remove()
        return count


def _audit_count(app, action: str) -> int:
    with app.app_context():
        count = db.session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == action)
        )
        db.session.remove()
        return count


# --- POST /api/v1/users/ -----------------------------------------------------------------


def test_a_retry_with_the_same_key_and_body_replays_the_first_response(client, admin, app, outbox):
    headers = _keyed(admin.headers, "create-1")
    first = client.post(USERS, json=_body(), headers=headers)
    retry = client.post(USERS, json=_body(), headers=headers)

    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    assert retry.status_code == 201
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json == first.json
    assert retry.headers["Location"] == first.headers["Location"]
    assert retry.headers["ETag"] == first.headers["ETag"]
    assert retry.mimetype == "application/json"
    assert _users_with_email(app, "idem@example.com") == 1
    assert _audit_count(app, "user.created") == 2  # the admin fixture's and this one
    assert len(outbox("welcome", recipient="idem@example.com")) == 1


def test_the_same_body_with_keys_in_another_order_is_the_same_request(client, admin, app):
    headers = _keyed(admin.headers, "create-order")
    body = _body()
    reordered = dict(reversed(list(body.items())))

    first = client.post(USERS, json=body, headers=headers)
    retry = client.post(USERS, json=reordered, headers=headers)

    assert first.status_code == retry.status_code == 201
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert _users_with_email(app, "idem@example.com") == 1


def test_the_same_key_with_another_body_is_422_and_creates_nothing(client, admin, app):
    headers = _keyed(admin.headers, "create-2")
    assert client.post(USERS, json=_body(), headers=headers).status_code == 201

    response = client.post(USERS, json=_body("someone-else@example.com"), headers=headers)

    assert response.status_code == 422
    assert response.json["type"].endswith("/idempotency-key-reused")
    assert "Idempotency-Key" in response.json["errors"]
    assert _users_with_email(app, "someone-else@example.com") == 0


def test_a_409_does_not_poison_the_key(client, admin, member, app):
    """Failures are not stored: the same key runs the request again once the conflict is gone."""
    headers = _keyed(admin.headers, "create-after-conflict")
    body = _body(member.email)

    conflict = client.post(USERS, json=body, headers=headers)
    again = client.post(USERS, json=body, headers=headers)
    assert conflict.status_code == again.status_code == 409
    assert again.json["type"].endswith("/email-taken")
    assert "Idempotent-Replayed" not in again.headers

    assert client.delete(f"{USERS}{member.id}", headers=admin.headers).status_code == 204
    created = client.post(USERS, json=body, headers=headers)

    assert created.status_code == 201
    assert "Idempotent-Replayed" not in created.headers
    assert _users_with_email(app, member.email) == 1


def test_a_validation_failure_does_not_poison_the_key(client, admin, app):
    headers = _keyed(admin.headers, "create-after-422")

    weak = client.post(USERS, json=_body(password="short"), headers=headers)
    fixed = client.post(USERS, json=_body(), headers=headers)

    assert weak.status_code == 422
    assert weak.json["type"].endswith("/validation-failed")
    assert fixed.status_code == 201
    assert "Idempotent-Replayed" not in fixed.headers


def test_a_key_longer_than_255_characters_is_422(client, admin, app):
    too_long = client.post(USERS, json=_body(), headers=_keyed(admin.headers, "k" * 256))
    empty = client.post(USERS, json=_body("empty@example.com"), headers=_keyed(admin.headers, ""))

    assert too_long.status_code == 422
    assert "Idempotency-Key" in too_long.json["errors"]
    assert empty.status_code == 422
    assert _users_with_email(app, "idem@example.com") == 0
    assert _users_with_email(app, "empty@example.com") == 0

    longest = client.post(USERS, json=_body(), headers=_keyed(admin.headers, "k" * 255))
    assert longest.status_code == 201


def test_keys_are_scoped_to_the_caller(client, admin, make_user, app):
    other_admin = make_user("admin")

    mine = client.post(USERS, json=_body("one@example.com"), headers=_keyed(admin.headers, "same"))
    theirs = client.post(
        USERS, json=_body("two@example.com"), headers=_keyed(other_admin.headers, "same")
    )

    assert mine.status_code == theirs.status_code == 201
    assert "Idempotent-Replayed" not in theirs.headers
    assert theirs.json["email"] == "two@example.com"


def test_a_replay_still_needs_the_permission(client, admin, member, app):
    headers = _keyed(admin.headers, "perm")
    assert client.post(USERS, json=_body(), headers=headers).status_code == 201

    response = client.post(USERS, json=_body(), headers=_keyed(member.headers, "perm"))

    assert response.status_code == 403
    assert "Idempotent-Replayed" not in response.headers


def test_without_a_key_each_post_runs(client, admin, app):
    first = client.post(USERS, json=_body(), headers=admin.headers)
    second = client.post(USERS, json=_body(), headers=admin.headers)

    assert first.status_code == 201
    assert second.status_code == 409
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(IdempotencyRecord)) == 0


def test_a_retry_while_the_first_request_runs_is_409_in_progress(client, admin, app, monkeypatch):
    from webapp.users import service

    entered, release = threading.Event(), threading.Event()
    original = service.create_user

    def slow_create(*args, **kwargs):
        entered.set()
        release.wait(timeout=60)
        return original(*args, **kwargs)

    monkeypatch.setattr(service, "create_user", slow_create)
    headers = _keyed(admin.headers, "in-flight")
    results = {}

    def first_request():
        results["first"] = app.test_client().post(USERS, json=_body(), headers=headers)

    worker = threading.Thread(target=first_request)
    worker.start()
    assert entered.wait(timeout=60)
    try:
        concurrent = client.post(USERS, json=_body(), headers=headers)
    finally:
        release.set()
        worker.join(timeout=60)

    assert concurrent.status_code == 409
    assert concurrent.json["type"].endswith("/idempotency-in-progress")
    assert results["first"].status_code == 201
    replay = client.post(USERS, json=_body(), headers=headers)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json == results["first"].json
    assert _users_with_email(app, "idem@example.com") == 1


def test_an_expired_key_can_be_used_again(client, admin, app):
    headers = _keyed(admin.headers, "old-key")
    assert client.post(USERS, json=_body(), headers=headers).status_code == 201
    ttl = settings_of(app).idempotency_ttl
    with app.app_context():
        db.session.execute(
            update(IdempotencyRecord).values(created_at=utcnow() - timedelta(seconds=ttl + 60))
        )
        db.session.commit()
        db.session.remove()

    response = client.post(USERS, json=_body("later@example.com"), headers=headers)

    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response.headers
    assert response.json["email"] == "later@example.com"


# --- POST /api/v1/auth/register ----------------------------------------------------------


def test_an_anonymous_register_retry_replays_the_first_response(client, app, outbox):
    headers = {"Idempotency-Key": "signup-1"}
    first = client.post(REGISTER, json=_body(), headers=headers)
    retry = client.post(REGISTER, json=_body(), headers=headers)

    assert first.status_code == 201
    assert retry.status_code == 201
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json == first.json
    assert retry.headers["Location"] == first.headers["Location"]
    assert _users_with_email(app, "idem@example.com") == 1
    assert len(outbox("verify_email", recipient="idem@example.com")) == 1
    assert _audit_count(app, "user.registered") == 1


def test_register_with_the_same_key_and_another_body_is_422(client, app):
    headers = {"Idempotency-Key": "signup-2"}
    assert client.post(REGISTER, json=_body(), headers=headers).status_code == 201

    response = client.post(REGISTER, json=_body("second@example.com"), headers=headers)

    assert response.status_code == 422
    assert response.json["type"].endswith("/idempotency-key-reused")
    assert _users_with_email(app, "second@example.com") == 0


def test_register_with_a_duplicate_email_does_not_poison_the_key(client, member, app):
    headers = {"Idempotency-Key": "signup-3"}

    taken = client.post(REGISTER, json=_body(member.email), headers=headers)
    other = client.post(REGISTER, json=_body("free@example.com"), headers=headers)

    assert taken.status_code == 409
    assert other.status_code == 201
    assert "Idempotent-Replayed" not in other.headers


def test_register_with_a_key_longer_than_255_characters_is_422(client, app):
    response = client.post(REGISTER, json=_body(), headers={"Idempotency-Key": "x" * 256})

    assert response.status_code == 422
    assert "Idempotency-Key" in response.json["errors"]
    assert _users_with_email(app, "idem@example.com") == 0
