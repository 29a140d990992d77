"""GET and PATCH /api/v1/users/me: the caller's own account."""

from __future__ import annotations

from sqlalchemy import select

from webapp.audit.models import AuditEvent
from webapp.extensions import db
from webapp.users.models import User

ME = "/api/v1/users/me"


def test_me_returns_the_callers_own_account_with_an_etag(client, member):
    response = client.get(ME, headers=member.headers)

    assert response.status_code == 200
    body = response.json
    assert body["id"] == str(member.id)
    assert body["email"] == member.email
    assert body["role"] == "user"
    assert body["active"] is True
    assert body["email_verified"] is True
    assert set(body) == {
        "id",
        "email",
        "name",
        "role",
        "active",
        "email_verified",
        "created_at",
        "updated_at",
    }
    assert response.headers["ETag"].startswith('"')


def test_me_without_a_token_is_401_with_a_bearer_challenge(client):
    response = client.get(ME)

    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_patching_my_name_changes_it_and_the_next_read_shows_it(client, member, app):
    before = client.get(ME, headers=member.headers)

    response = client.patch(ME, json={"name": "  Grace Hopper  "}, headers=member.headers)

    assert response.status_code == 200, response.json
    assert response.json["name"] == "Grace Hopper"
    assert response.headers["ETag"] != before.headers["ETag"]
    again = client.get(ME, headers=member.headers)
    assert again.json["name"] == "Grace Hopper"
    assert again.headers["ETag"] == response.headers["ETag"]
    with app.app_context():
        assert db.session.get(User, member.id).name == "Grace Hopper"
        [event] = db.session.scalars(
            select(AuditEvent).where(AuditEvent.action == "user.updated")
        ).all()
        assert event.actor_id == member.id
        assert event.target_id == member.id
        assert event.details == {"fields": ["name"]}


def test_patching_me_with_an_unknown_field_is_422_and_changes_nothing(client, member, app):
    response = client.patch(
        ME, json={"name": "New", "favourite_colour": "blue"}, headers=member.headers
    )

    assert response.status_code == 422
    assert response.json["type"].endswith("/validation-failed")
    assert "favourite_colour" in response.json["errors"]
    with app.app_context():
        assert db.session.get(User, member.id).name == "Test User"


def test_patching_me_cannot_deactivate_myself(client, member, app):
    response = client.patch(ME, json={"active": False}, headers=member.headers)

    assert response.status_code == 422
    assert "active" in response.json["errors"]
    with app.app_context():
        assert db.session.get(User, member.id).active is True
    assert client.get(ME, headers=member.headers).status_code == 200


def test_patching_me_cannot_change_my_role_or_email(client, member, app):
    for field, value in (("role", "admin"), ("email", "new@example.com")):
        response = client.patch(ME, json={field: value}, headers=member.headers)
        assert response.status_code == 422, field
        assert field in response.json["errors"]
    with app.app_context():
        user = db.session.get(User, member.id)
        assert (user.role, user.email) == ("user", member.email)


def test_patching_me_with_an_empty_name_is_422(client, member):
    response = client.patch(ME, json={"name": ""}, headers=member.headers)

    assert response.status_code == 422
    assert "name" in response.json["errors"]


def test_patching_me_with_malformed_json_is_400(client, member):
    response = client.patch(
        ME,
        data="{not json",
        content_type="application/json",
        headers=member.headers,
    )

    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
