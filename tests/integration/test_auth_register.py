"""POST /api/v1/auth/register and /verify-email (see docs/api.md)."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select, update

from tests.support.accounts import STRONG_PASSWORD
from webapp.audit.models import AuditEvent
from webapp.auth.models import OneTimeToken
from webapp.db import utcnow
from webapp.extensions import db
from webapp.users.models import User

REGISTER = "/api/v1/auth/register"
VERIFY = "/api/v1/auth/verify-email"
LOGIN = "/api/v1/auth/login"


def slug(response) -> str:
    return response.json["type"].rsplit("/", 1)[-1]


def register(client, email="grace@example.com", password=STRONG_PASSWORD, name="Grace", **extra):
    return client.post(REGISTER, json={"email": email, "password": password, "name": name, **extra})


def token_from(message) -> str:
    return parse_qs(urlsplit(message.payload["link"]).query)["token"][0]


def audit_actions(app, action: str) -> list[AuditEvent]:
    with app.app_context():
        rows = list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == action)))
        db.session.remove()
    return rows


# --- register -------------------------------------------------------------------------------


def test_register_creates_an_unverified_account_and_points_location_at_it(client, app):
    response = register(client)

    assert response.status_code == 201, response.json
    body = response.json
    assert response.headers["Location"].endswith(f"/api/v1/users/{body['id']}")
    assert body["email"] == "grace@example.com"
    assert body["name"] == "Grace"
    assert body["role"] == "user"
    assert body["email_verified"] is False
    assert "password" not in body
    assert "password_hash" not in body
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == "grace@example.com"))
        assert user is not None
        assert user.password_hash.startswith("$argon2id$")
        db.session.remove()


def test_register_refuses_an_email_already_taken_in_another_case(client):
    assert register(client, email="grace@example.com").status_code == 201

    response = register(client, email="GRACE@Example.COM")

    assert response.status_code == 409
    assert response.mimetype == "application/problem+json"
    assert slug(response) == "email-taken"


@pytest.mark.parametrize(
    "password",
    [
        pytest.param("Sh0rt-pw!", id="too-short"),
        pytest.param("password1234", id="common"),
        pytest.param("a" * 129, id="too-long"),
    ],
)
def test_register_rejects_a_password_the_policy_forbids(client, password):
    response = register(client, password=password)

    assert response.status_code == 422
    assert slug(response) == "validation-failed"
    assert response.json["errors"]["password"]


def test_register_rejects_a_password_equal_to_the_email(client, app):
    email = "marguerite.hamilton@example.com"

    response = register(client, email=email, password=email)

    assert response.status_code == 422
    assert any("email" in message for message in response.json["errors"]["password"])
    with app.app_context():
        assert db.session.scalar(select(User).where(User.email == email)) is None
        db.session.remove()


def test_register_rejects_an_unknown_field(client):
    response = register(client, role="admin")

    assert response.status_code == 422
    assert "role" in response.json["errors"]


@pytest.mark.parametrize("missing", ["email", "password", "name"])
def test_register_rejects_a_body_missing_a_required_field(client, missing):
    body = {"email": "grace@example.com", "password": STRONG_PASSWORD, "name": "Grace"}
    del body[missing]

    response = client.post(REGISTER, json=body)

    assert response.status_code == 422
    assert missing in response.json["errors"]


def test_register_rejects_an_invalid_email(client):
    response = register(client, email="not-an-email")

    assert response.status_code == 422
    assert "email" in response.json["errors"]


def test_register_answers_malformed_json_with_400(client):
    response = client.post(REGISTER, data="{not json", content_type="application/json")

    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"


def test_register_queues_a_verification_email_with_a_working_link(client, outbox):
    register(client, email="grace@example.com")

    [message] = outbox("verify_email")
    assert message.recipient == "grace@example.com"
    assert message.payload["link"].startswith("https://gatehouse.test/verify-email?token=")
    assert message.payload["token"] == token_from(message)

    assert client.post(VERIFY, json={"token": token_from(message)}).status_code == 204
    login = client.post(LOGIN, json={"email": "grace@example.com", "password": STRONG_PASSWORD})
    assert login.status_code == 200


def test_register_is_audited_with_the_new_user_as_actor_and_target(client, app):
    response = register(client)

    [event] = audit_actions(app, "user.registered")
    assert str(event.target_id) == response.json["id"]
    assert str(event.actor_id) == response.json["id"]
    assert event.target_type == "user"


def test_register_with_the_same_idempotency_key_creates_one_account(client, app):
    headers = {"Idempotency-Key": "register-once-123"}
    body = {"email": "grace@example.com", "password": STRONG_PASSWORD, "name": "Grace"}

    first = client.post(REGISTER, json=body, headers=headers)
    second = client.post(REGISTER, json=body, headers=headers)

    assert first.status_code == second.status_code == 201
    assert first.json["id"] == second.json["id"]
    with app.app_context():
        assert len(list(db.session.scalars(select(User)))) == 1
        db.session.remove()


# --- verify-email ---------------------------------------------------------------------------


def test_verify_email_token_works_only_once(client, outbox):
    register(client)
    token = token_from(outbox("verify_email")[0])

    first = client.post(VERIFY, json={"token": token})
    second = client.post(VERIFY, json={"token": token})

    assert first.status_code == 204
    assert second.status_code == 422
    assert slug(second) == "invalid-token"
    assert "token" in second.json["errors"]


def test_verify_email_rejects_an_expired_token(client, app, outbox):
    register(client)
    token = token_from(outbox("verify_email")[0])
    with app.app_context():
        db.session.execute(update(OneTimeToken).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
        db.session.remove()

    response = client.post(VERIFY, json={"token": token})

    assert response.status_code == 422
    assert slug(response) == "invalid-token"
    login = client.post(LOGIN, json={"email": "grace@example.com", "password": STRONG_PASSWORD})
    assert login.status_code == 403


def test_verify_email_rejects_an_unknown_token(client):
    response = client.post(VERIFY, json={"token": "x" * 43})

    assert response.status_code == 422
    assert slug(response) == "invalid-token"


def test_verify_email_refuses_a_password_reset_token(client, outbox):
    register(client)
    client.post("/api/v1/auth/password-reset", json={"email": "grace@example.com"})
    reset_token = token_from(outbox("password_reset")[0])

    response = client.post(VERIFY, json={"token": reset_token})

    assert response.status_code == 422
    assert slug(response) == "invalid-token"


def test_verify_email_marks_the_account_verified_queues_a_welcome_and_audits(client, app, outbox):
    user_id = register(client).json["id"]
    assert outbox("welcome") == []

    client.post(VERIFY, json={"token": token_from(outbox("verify_email")[0])})

    [welcome] = outbox("welcome")
    assert welcome.recipient == "grace@example.com"
    [event] = audit_actions(app, "auth.email_verified")
    assert str(event.target_id) == user_id
    with app.app_context():
        user = db.session.get(User, event.target_id)
        assert user is not None
        assert user.email_verified_at is not None
        db.session.remove()
