"""POST /api/v1/webhooks/{id}/rotate-secret: a new secret shown once; the previous one keeps
signing beside it during WEBHOOK_SECRET_OVERLAP, so real deliveries to the local receiver verify
with `standardwebhooks` under either secret, then under the new one alone."""

from __future__ import annotations

import base64
import json
import os
import uuid
from datetime import timedelta

import pytest
import standardwebhooks
from sqlalchemy import delete, select

from tests.support.accounts import age_sessions, log_in
from tests.support.problems import assert_problem
from tests.support.webhook_admin import HOOKS, api_key_of, rename, set_endpoint, subscribe
from webapp.audit.models import AuditEvent
from webapp.db import utcnow
from webapp.extensions import db
from webapp.outbox.models import OutboxMessage
from webapp.webhooks.models import WebhookEndpoint
from webapp.webhooks.rotation import signing_secrets

Invalid = standardwebhooks.webhooks.WebhookVerificationError


def rotate(application, admin, hook_id: str, **headers):
    return application.test_client().post(
        f"{HOOKS}{hook_id}/rotate-secret", headers={**admin.headers, **headers}
    )


def verifies(secret: str, request) -> bool:
    headers, body = request
    try:
        standardwebhooks.Webhook(secret).verify(body, headers)
    except Invalid:
        return False
    return True


def test_rotation_shows_a_new_secret_once_and_both_sign_during_the_overlap(
    hooks_app, admin, member, receiver, deliver_webhooks
):
    hook = subscribe(hooks_app, admin, receiver.url, event_types=["user.updated"])
    old = hook["secret"]

    rotated = rotate(hooks_app, admin, hook["id"])

    assert rotated.status_code == 200, rotated.json
    new = rotated.json["secret"]
    assert new.startswith("whsec_")
    assert new != old
    assert rotated.json["secret_rotated_at"]
    assert rotated.json["previous_secret_expires_at"]  # a day by default
    assert rotated.headers["ETag"]
    shown = hooks_app.test_client().get(f"{HOOKS}{hook['id']}", headers=admin.headers).json
    assert "secret" not in shown
    assert shown["previous_secret_expires_at"] == rotated.json["previous_secret_expires_at"]
    with hooks_app.app_context():
        row = db.session.get(WebhookEndpoint, uuid.UUID(hook["id"]))
        assert row.previous_secret_encrypted.startswith("v1.")
        assert old not in row.previous_secret_encrypted
        assert new not in row.secret_encrypted
        db.session.remove()

    rename(hooks_app, admin, member.id, "Overlap")
    deliver_webhooks(hooks_app)

    [request] = receiver.requests
    headers, body = request
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert all(s.startswith("v1,") for s in headers["webhook-signature"].split(" "))
    assert verifies(new, request)
    assert verifies(old, request)
    assert json.loads(body)["data"]["name"] == "Overlap"


def test_after_the_overlap_only_the_new_secret_signs(
    hooks_app, admin, member, receiver, deliver_webhooks
):
    hook = subscribe(hooks_app, admin, receiver.url, event_types=["user.updated"])
    new = rotate(hooks_app, admin, hook["id"]).json["secret"]
    set_endpoint(hooks_app, hook["id"], previous_secret_expires_at=utcnow() - timedelta(seconds=1))

    rename(hooks_app, admin, member.id, "After")
    deliver_webhooks(hooks_app)

    [request] = receiver.requests
    assert len(request[0]["webhook-signature"].split(" ")) == 1
    assert verifies(new, request)
    assert not verifies(hook["secret"], request)
    shown = hooks_app.test_client().get(f"{HOOKS}{hook['id']}", headers=admin.headers).json
    assert shown["previous_secret_expires_at"] is None


def test_a_second_rotation_inside_the_overlap_drops_the_oldest_secret(
    hooks_app, admin, member, receiver, deliver_webhooks
):
    hook = subscribe(hooks_app, admin, receiver.url, event_types=["user.updated"])
    second = rotate(hooks_app, admin, hook["id"]).json["secret"]
    third = rotate(hooks_app, admin, hook["id"]).json["secret"]

    rename(hooks_app, admin, member.id, "Third")
    deliver_webhooks(hooks_app)

    [request] = receiver.requests
    assert verifies(third, request)
    assert verifies(second, request)
    assert not verifies(hook["secret"], request)


def test_without_an_overlap_the_old_secret_stops_at_once(
    make_app, make_user, admin, member, receiver, deliver_webhooks
):
    strict = make_app(webhook_allow_private=True, webhook_secret_overlap=0)
    hook = subscribe(strict, admin, receiver.url, event_types=["user.updated"])

    rotated = rotate(strict, admin, hook["id"])
    rename(strict, admin, member.id, "Strict")
    deliver_webhooks(strict)

    assert rotated.json["previous_secret_expires_at"] is None
    [request] = receiver.requests
    assert verifies(rotated.json["secret"], request)
    assert not verifies(hook["secret"], request)


def test_rotation_is_audited_without_the_secrets(hooks_app, admin):
    hook = subscribe(hooks_app, admin, "https://hooks.example.com/x")

    new = rotate(hooks_app, admin, hook["id"]).json["secret"]

    with hooks_app.app_context():
        [event] = db.session.scalars(
            select(AuditEvent).where(AuditEvent.action == "webhook.secret_rotated")
        )
        assert str(event.target_id) == hook["id"]
        assert event.actor_id == admin.id
        assert event.details["previous_secret_valid_until"]
        assert hook["secret"] not in json.dumps(event.details)
        assert new not in json.dumps(event.details)
        db.session.remove()


def test_rotation_honours_if_match(hooks_app, admin):
    hook = subscribe(hooks_app, admin, "https://hooks.example.com/x")
    url = f"{HOOKS}{hook['id']}"
    etag = hooks_app.test_client().get(url, headers=admin.headers).headers["ETag"]

    first = rotate(hooks_app, admin, hook["id"], **{"If-Match": etag})
    stale = rotate(hooks_app, admin, hook["id"], **{"If-Match": etag})

    assert first.status_code == 200
    assert first.headers["ETag"] != etag
    assert_problem(stale, 412, "precondition-failed")


def test_rotation_needs_a_recent_authentication(hooks_app, admin):
    hook = subscribe(hooks_app, admin, "https://hooks.example.com/x")
    age_sessions(hooks_app, admin.id)

    assert_problem(rotate(hooks_app, admin, hook["id"]), 403, "reauthentication-required")

    log_in(hooks_app.test_client(), admin)  # a fresh sign-in
    assert rotate(hooks_app, admin, hook["id"]).status_code == 200


def test_subscribing_needs_a_recent_authentication(hooks_app, admin):
    """A stolen administrator token must not point every user's events at the thief."""
    age_sessions(hooks_app, admin.id)

    answer = hooks_app.test_client().post(
        HOOKS, json={"url": "https://thief.example.com/x"}, headers=admin.headers
    )

    assert_problem(answer, 403, "reauthentication-required")
    with hooks_app.app_context():
        assert db.session.scalars(select(WebhookEndpoint)).all() == []
        db.session.remove()


@pytest.mark.parametrize("who", ["member", "api_key", "anonymous"])
def test_only_an_administrators_session_rotates(hooks_app, admin, member, who):
    hook = subscribe(hooks_app, admin, "https://hooks.example.com/x")
    http = hooks_app.test_client()
    headers = {
        "member": member.headers,
        "api_key": {"X-API-Key": api_key_of(hooks_app, admin)},
        "anonymous": {},
    }[who]

    response = http.post(f"{HOOKS}{hook['id']}/rotate-secret", headers=headers)

    status, slug = {
        "member": (403, "forbidden"),
        "api_key": (403, "api-key-not-allowed"),
        "anonymous": (401, "unauthorized"),
    }[who]
    assert_problem(response, status, slug)
    with hooks_app.app_context():
        row = db.session.get(WebhookEndpoint, uuid.UUID(hook["id"]))
        assert row.secret_rotated_at is None
        db.session.remove()


def test_rotating_an_unknown_webhook_is_404(hooks_app, admin):
    assert_problem(rotate(hooks_app, admin, str(uuid.uuid4())), 404, "not-found")


def test_keys_rotate_encryption_covers_the_previous_secret(make_app, admin):
    k1 = "k1:" + base64.b64encode(os.urandom(32)).decode()
    k2 = "k2:" + base64.b64encode(os.urandom(32)).decode()
    old_app = make_app(encryption_keys=k1)
    hook = subscribe(old_app, admin, "https://hooks.example.com/x")
    new = rotate(old_app, admin, hook["id"]).json["secret"]
    with old_app.app_context():  # the accounts' emails, sealed under the suite's usual key
        db.session.execute(delete(OutboxMessage))
        db.session.commit()
        db.session.remove()

    result = (
        make_app(encryption_keys=f"{k2},{k1}")
        .test_cli_runner()
        .invoke(args=["keys", "rotate-encryption"])
    )

    assert result.exit_code == 0, result.output
    assert "webhook_endpoints.previous_secret_encrypted: 1 re-encrypted" in result.output
    with make_app(encryption_keys=k2).app_context():  # the old key is gone
        endpoint = db.session.get(WebhookEndpoint, uuid.UUID(hook["id"]))
        assert endpoint.previous_secret_encrypted.startswith("v1.k2.")
        assert signing_secrets(endpoint) == [new, hook["secret"]]
        db.session.remove()
