"""Domain events: each type written exactly when its change commits, never on a rollback, as a
CloudEvents 1.0 envelope with `data.user_id` and no secret (docs/webhooks.md)."""

from __future__ import annotations

import json
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from tests.support.accounts import STRONG_PASSWORD
from webapp.audit import service as audit
from webapp.context import SYSTEM
from webapp.events.models import DomainEvent
from webapp.events.service import TYPES, emit
from webapp.extensions import db
from webapp.users.models import User

NEW_PASSWORD = "quiet-Harbor-58-violin"
USERS = "/api/v1/users/"


def events(app, event_type: str | None = None) -> list[dict]:
    with app.app_context():
        query = select(DomainEvent).order_by(DomainEvent.created_at, DomainEvent.id)
        if event_type:
            query = query.where(DomainEvent.type == event_type)
        rows = [row.envelope for row in db.session.scalars(query)]
        db.session.remove()
        return rows


def token_from(message) -> str:
    return parse_qs(urlsplit(message.payload["link"]).query)["token"][0]


def etag(client, admin, user_id) -> str:
    return client.get(f"{USERS}{user_id}", headers=admin.headers).headers["ETag"]


def test_sign_up_emits_user_created_as_a_cloudevent_without_secrets(client, app):
    response = client.post(
        "/api/v1/auth/register",
        json={"email": "grace@example.com", "password": STRONG_PASSWORD, "name": "Grace"},
    )
    assert response.status_code == 201

    [event] = events(app, "user.created")
    user_id = response.json["id"]
    assert event["specversion"] == "1.0"
    assert event["source"] == "https://gatehouse.test"
    assert event["subject"] == user_id
    assert event["datacontenttype"] == "application/json"
    assert event["dataschema"] == "urn:gatehouse:events:user.created:v1"
    assert event["time"].endswith("Z")
    uuid.UUID(event["id"])
    assert event["data"] == {
        "user_id": user_id,
        "email": "grace@example.com",
        "name": "Grace",
        "role": "user",
        "active": True,
        "email_verified": False,
        "via": "signup",
        "actor_id": user_id,
    }
    text = json.dumps(events(app))
    assert STRONG_PASSWORD not in text
    assert "argon2" not in text
    assert "password_hash" not in text


def test_admin_create_emits_user_created_via_admin(client, admin, app):
    response = client.post(
        USERS,
        json={"email": "new@example.com", "name": "New", "password": STRONG_PASSWORD},
        headers=admin.headers,
    )
    assert response.status_code == 201, response.json

    created = [e for e in events(app, "user.created") if e["subject"] == response.json["id"]]
    assert [e["data"]["via"] for e in created] == ["admin"]
    assert created[0]["data"]["actor_id"] == str(admin.id)
    assert created[0]["data"]["email_verified"] is True


def test_verifying_the_address_emits_user_email_verified(client, app, outbox):
    client.post(
        "/api/v1/auth/register",
        json={"email": "grace@example.com", "password": STRONG_PASSWORD, "name": "Grace"},
    )
    assert events(app, "user.email_verified") == []

    token = token_from(outbox("verify_email")[0])
    assert client.post("/api/v1/auth/verify-email", json={"token": token}).status_code == 204

    [event] = events(app, "user.email_verified")
    assert event["data"]["email_verified"] is True


def test_login_and_logout_emit_session_created_and_session_revoked(client, app, member):
    # `member` signed in through the API once already.
    [created] = events(app, "session.created")
    assert created["data"]["user_id"] == str(member.id)
    session_id = created["data"]["session_id"]
    assert created["subject"] == session_id

    assert client.post("/api/v1/auth/logout", headers=member.headers).status_code == 204

    [revoked] = events(app, "session.revoked")
    assert revoked["subject"] == session_id
    assert revoked["data"] == {
        "user_id": str(member.id),
        "session_id": session_id,
        "reason": "logout",
        "actor_id": str(member.id),
    }


def test_patch_emits_user_updated_with_the_changed_fields_only_when_something_changed(
    client, admin, member, app
):
    url = f"{USERS}{member.id}"
    assert client.patch(url, json={"name": "Renamed"}, headers=admin.headers).status_code == 200
    assert client.patch(url, json={"name": "Renamed"}, headers=admin.headers).status_code == 200

    [event] = events(app, "user.updated")
    assert event["data"]["changed"] == ["name"]
    assert event["data"]["name"] == "Renamed"
    assert events(app, "user.deactivated") == []


def test_deactivation_emits_user_deactivated_and_revokes_the_sessions(client, admin, member, app):
    url = f"{USERS}{member.id}"
    response = client.patch(url, json={"active": False}, headers=admin.headers)
    assert response.status_code == 200, response.json

    [deactivated] = events(app, "user.deactivated")
    assert deactivated["subject"] == str(member.id)
    assert deactivated["data"]["actor_id"] == str(admin.id)
    revoked = events(app, "session.revoked")
    assert [e["data"]["reason"] for e in revoked] == ["user_deactivated"]
    assert revoked[0]["data"]["user_id"] == str(member.id)
    # Deactivating an inactive account again is no new deactivation.
    client.patch(url, json={"active": False}, headers=admin.headers)
    assert len(events(app, "user.deactivated")) == 1


def test_role_change_emits_user_role_changed(client, admin, member, app):
    response = client.put(f"{USERS}{member.id}/role", json={"role": "admin"}, headers=admin.headers)
    assert response.status_code == 200, response.json

    [event] = events(app, "user.role_changed")
    assert (event["data"]["old_role"], event["data"]["role"]) == ("user", "admin")


def test_confirmed_email_change_emits_user_email_changed(client, member, app, outbox):
    client.post(
        "/api/v1/users/me/email", json={"email": "mine@example.com"}, headers=member.headers
    )
    assert events(app, "user.email_changed") == []

    [link] = outbox("email_change", recipient="mine@example.com")
    assert (
        client.post("/api/v1/auth/verify-email", json={"token": token_from(link)}).status_code
        == 204
    )

    [event] = events(app, "user.email_changed")
    assert event["data"]["email"] == "mine@example.com"


def test_password_change_and_reset_emit_user_password_changed(client, member, app, outbox):
    response = client.post(
        "/api/v1/auth/password",
        json={"current_password": STRONG_PASSWORD, "new_password": NEW_PASSWORD},
        headers=member.headers,
    )
    assert response.status_code == 204
    client.post("/api/v1/auth/password-reset", json={"email": member.email})
    [reset] = outbox("password_reset", recipient=member.email)
    confirmed = client.post(
        "/api/v1/auth/password-reset/confirm",
        json={"token": token_from(reset), "password": STRONG_PASSWORD},
    )
    assert confirmed.status_code == 200, confirmed.json

    changed = events(app, "user.password_changed")
    assert [e["data"]["reason"] for e in changed] == ["changed", "reset"]
    text = json.dumps(events(app))
    assert NEW_PASSWORD not in text
    assert STRONG_PASSWORD not in text


def test_delete_emits_user_deleted(client, admin, member, app):
    url = f"{USERS}{member.id}"
    response = client.delete(
        url, headers={**admin.headers, "If-Match": etag(client, admin, member.id)}
    )
    assert response.status_code == 204

    [event] = events(app, "user.deleted")
    assert event["subject"] == str(member.id)
    assert event["data"]["email"] == member.email


def test_a_refused_change_leaves_no_event(client, admin, app):
    # The last administrator cannot deactivate themself: the transaction rolls back.
    response = client.patch(f"{USERS}{admin.id}", json={"active": False}, headers=admin.headers)
    assert response.status_code == 409

    assert events(app, "user.deactivated") == []
    assert events(app, "user.updated") == []
    assert events(app, "session.revoked") == []


def test_an_audited_change_that_rolls_back_takes_its_events_with_it(app, member):
    with app.app_context():
        user = db.session.get(User, member.id)
        user.name = "Never committed"
        audit.record(db.session, SYSTEM, "user.updated", target_type="user", target_id=user.id)
        pending = [obj for obj in db.session.new if isinstance(obj, DomainEvent)]
        assert [e.type for e in pending] == ["user.updated"]  # written beside the audit event
        db.session.rollback()
        db.session.remove()

    assert events(app, "user.updated") == []


def test_emit_refuses_unknown_types_and_secret_fields(app_ctx):
    with pytest.raises(ValueError, match="unknown event type"):
        emit(db.session, "user.exploded", subject=uuid.uuid4(), user_id=uuid.uuid4())
    with pytest.raises(ValueError, match="secret"):
        emit(
            db.session,
            "user.updated",
            subject=uuid.uuid4(),
            user_id=uuid.uuid4(),
            data={"password_hash": "x"},
        )


def test_every_type_has_a_versioned_schema_in_the_docs():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "webhooks.md").read_text()
    for event_type, version in TYPES.items():
        assert f"urn:gatehouse:events:{event_type}:v{version}" in doc


def test_mfa_on_and_off_emit_mfa_enabled_and_mfa_disabled(client, member, app):
    from tests.support.mfa import MFA, enable

    secret, _ = enable(client, member)
    assert [e["subject"] for e in events(app, "mfa.enabled")] == [str(member.id)]
    assert events(app, "mfa.disabled") == []

    response = client.delete(
        f"{MFA}/totp", json={"password": member.password}, headers=member.headers
    )
    assert response.status_code == 204, response.json

    [disabled] = events(app, "mfa.disabled")
    assert disabled["data"]["user_id"] == str(member.id)
    assert secret not in json.dumps(events(app))


def test_api_key_creation_and_revocation_emit_events_without_the_key(client, admin, app):
    response = client.post(
        "/api/v1/api-keys/", json={"name": "ci", "scopes": ["users:read"]}, headers=admin.headers
    )
    assert response.status_code == 201, response.json
    key_id = response.json["id"]
    assert client.delete(f"/api/v1/api-keys/{key_id}", headers=admin.headers).status_code == 204

    created, revoked = events(app, "api_key.created"), events(app, "api_key.revoked")
    assert [e["subject"] for e in created + revoked] == [key_id, key_id]
    assert created[0]["data"] == {
        "user_id": str(admin.id),
        "api_key_id": key_id,
        "name": "ci",
        "scopes": ["users:read"],
        "actor_id": str(admin.id),
    }
    secret_part = response.json["key"].rsplit("_", 1)[1]
    assert secret_part not in json.dumps(events(app))
