"""POST /api/v1/users/ and GET/PATCH/PUT/DELETE /api/v1/users/{id}."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select

from tests.support.accounts import STRONG_PASSWORD
from tests.support.rows import audit_events
from webapp.extensions import db
from webapp.users.models import User

USERS = "/api/v1/users/"


def _user_count(app) -> int:
    with app.app_context():
        count = db.session.scalar(select(func.count()).select_from(User))
        db.session.remove()
        return count


def _new_user_body(**overrides):
    body = {"email": "New.Person@Example.com", "name": "New Person", "password": STRONG_PASSWORD}
    body.update(overrides)
    return body


# --- POST /users -------------------------------------------------------------------------


def test_admin_creates_a_user_who_is_verified_and_can_sign_in_at_once(client, admin, app):
    response = client.post(USERS, json=_new_user_body(), headers=admin.headers)

    assert response.status_code == 201, response.json
    created = response.json
    assert response.headers["Location"].endswith(f"/api/v1/users/{created['id']}")
    assert response.headers["ETag"]
    assert created["email"] == "New.Person@Example.com"
    assert created["role"] == "user"
    assert created["email_verified"] is True
    assert created["active"] is True
    assert "password" not in created
    assert "password_hash" not in created

    login = client.post(
        "/api/v1/auth/login",
        json={"email": "new.person@example.com", "password": STRONG_PASSWORD},
    )
    assert login.status_code == 200, login.json
    location = client.get(response.headers["Location"], headers=admin.headers)
    assert location.status_code == 200
    assert location.json["id"] == created["id"]


def test_creating_a_user_is_audited_with_the_admin_as_actor(client, admin, app):
    response = client.post(USERS, json=_new_user_body(role="admin"), headers=admin.headers)
    assert response.status_code == 201

    [event] = audit_events(app, "user.created")[-1:]
    assert event.actor_id == admin.id
    assert event.target_type == "user"
    assert str(event.target_id) == response.json["id"]
    assert event.details == {"role": "admin"}
    assert event.request_id == response.headers["X-Request-ID"]


def test_creating_a_user_queues_a_welcome_email(client, admin, outbox):
    response = client.post(USERS, json=_new_user_body(), headers=admin.headers)
    assert response.status_code == 201

    [message] = outbox("welcome", recipient="New.Person@Example.com")
    assert message.payload["name"] == "New Person"


def test_creating_a_user_with_a_taken_email_in_any_case_is_409(client, admin, member, app):
    before = _user_count(app)

    response = client.post(
        USERS, json=_new_user_body(email=member.email.upper()), headers=admin.headers
    )

    assert response.status_code == 409
    assert response.json["type"].endswith("/email-taken")
    assert _user_count(app) == before


def test_creating_a_user_with_a_weak_password_is_422_and_creates_nothing(client, admin, app):
    before = _user_count(app)

    for password in ("short", "password1234", "new.person@example.com"):
        response = client.post(USERS, json=_new_user_body(password=password), headers=admin.headers)
        assert response.status_code == 422, password
        assert response.json["type"].endswith("/validation-failed")
        assert "password" in response.json["errors"]
    assert _user_count(app) == before
    assert [e.target_id for e in audit_events(app, "user.created")] == [admin.id]


def test_creating_a_user_with_an_unknown_field_or_role_is_422(client, admin, app):
    before = _user_count(app)

    unknown = client.post(USERS, json=_new_user_body(active=False), headers=admin.headers)
    bad_role = client.post(USERS, json=_new_user_body(role="root"), headers=admin.headers)
    missing = client.post(USERS, json={"email": "x@example.com"}, headers=admin.headers)

    assert unknown.status_code == 422
    assert "active" in unknown.json["errors"]
    assert bad_role.status_code == 422
    assert "role" in bad_role.json["errors"]
    assert missing.status_code == 422
    # Without a password the account is an invitation, so only `name` is missing here.
    assert "name" in missing.json["errors"]
    assert _user_count(app) == before


def test_a_user_created_without_a_password_is_an_unverified_invitation(client, admin, app, outbox):
    body = {"email": "invitee@example.com", "name": "Invitee"}
    response = client.post(USERS, json=body, headers=admin.headers)

    assert response.status_code == 201, response.json
    assert response.json["role"] == "user"
    assert response.json["email_verified"] is False
    with app.app_context():
        user = db.session.get(User, uuid.UUID(response.json["id"]))
        assert user.password_hash is None
        db.session.remove()
    assert len(outbox("verify_email", "invitee@example.com")) == 1
    assert len(outbox("password_reset", "invitee@example.com")) == 1
    assert outbox("welcome", "invitee@example.com") == []
    created = uuid.UUID(response.json["id"])
    [event] = [e for e in audit_events(app, "user.created") if e.target_id == created]
    assert event.details == {"role": "user", "invited": True}


def test_a_member_cannot_create_users(client, member, app):
    before = _user_count(app)

    response = client.post(USERS, json=_new_user_body(role="admin"), headers=member.headers)

    assert response.status_code == 403
    assert response.json["type"].endswith("/forbidden")
    assert _user_count(app) == before


# --- GET /users/{id} ---------------------------------------------------------------------


def test_admin_reads_any_user_by_id(client, admin, member):
    response = client.get(f"{USERS}{member.id}", headers=admin.headers)

    assert response.status_code == 200
    assert response.json["id"] == str(member.id)
    assert response.json["email"] == member.email
    assert response.headers["ETag"]


def test_a_user_reads_their_own_id(client, member):
    response = client.get(f"{USERS}{member.id}", headers=member.headers)

    assert response.status_code == 200
    assert response.json["email"] == member.email


def test_a_user_reading_another_users_id_is_403(client, member, make_user):
    other = make_user(login=False)

    response = client.get(f"{USERS}{other.id}", headers=member.headers)

    assert response.status_code == 403
    assert response.json["type"].endswith("/forbidden")
    assert other.email not in response.get_data(as_text=True)


def test_every_verb_on_a_missing_user_id_is_404_for_an_admin(client, admin):
    missing = f"{USERS}{uuid.uuid4()}"
    calls = [
        client.get(missing, headers=admin.headers),
        client.patch(missing, json={"name": "x"}, headers=admin.headers),
        client.put(
            missing,
            json={"email": "a@example.com", "name": "A", "role": "user", "active": True},
            headers=admin.headers,
        ),
        client.delete(missing, headers=admin.headers),
        client.put(f"{missing}/role", json={"role": "admin"}, headers=admin.headers),
    ]

    for response in calls:
        assert response.status_code == 404, response.request.method
        assert response.json["type"].endswith("/not-found")


def test_a_user_id_that_is_not_a_uuid_is_404(client, admin):
    response = client.get(f"{USERS}not-a-uuid", headers=admin.headers)

    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"


# --- PATCH /users/{id} -------------------------------------------------------------------


def test_admin_renames_another_user(client, admin, member, app):
    response = client.patch(f"{USERS}{member.id}", json={"name": "Renamed"}, headers=admin.headers)

    assert response.status_code == 200
    assert response.json["name"] == "Renamed"
    with app.app_context():
        assert db.session.get(User, member.id).name == "Renamed"
    [event] = audit_events(app, "user.updated")
    assert (event.actor_id, event.target_id) == (admin.id, member.id)


def test_a_user_renames_themself_through_their_own_id(client, member):
    response = client.patch(
        f"{USERS}{member.id}", json={"name": "Me Myself"}, headers=member.headers
    )

    assert response.status_code == 200
    assert response.json["name"] == "Me Myself"
    assert client.get("/api/v1/users/me", headers=member.headers).json["name"] == "Me Myself"


def test_a_user_patching_another_user_is_403_and_changes_nothing(client, member, make_user, app):
    other = make_user(login=False)

    response = client.patch(f"{USERS}{other.id}", json={"name": "Hacked"}, headers=member.headers)

    assert response.status_code == 403
    with app.app_context():
        assert db.session.get(User, other.id).name == "Test User"
    assert audit_events(app, "user.updated") == []


def test_a_user_cannot_set_active_even_on_their_own_id(client, member, app):
    for active in (False, True):
        response = client.patch(
            f"{USERS}{member.id}", json={"active": active}, headers=member.headers
        )
        assert response.status_code == 403
        assert response.json["type"].endswith("/forbidden")
    with app.app_context():
        assert db.session.get(User, member.id).active is True
    assert audit_events(app, "user.updated") == []


def test_patching_a_role_through_patch_is_422(client, admin, member, app):
    response = client.patch(f"{USERS}{member.id}", json={"role": "admin"}, headers=admin.headers)

    assert response.status_code == 422
    assert "role" in response.json["errors"]
    with app.app_context():
        assert db.session.get(User, member.id).role == "user"


# --- PUT /users/{id} ---------------------------------------------------------------------


def test_admin_replaces_a_users_editable_fields(client, admin, member, app):
    # The same address in another case applies at once; a new one waits for confirmation.
    email = member.email.replace("user", "User")
    body = {"email": email, "name": "Replaced", "role": "user", "active": True}

    response = client.put(f"{USERS}{member.id}", json=body, headers=admin.headers)

    assert response.status_code == 200, response.json
    assert {k: response.json[k] for k in body} == body
    with app.app_context():
        user = db.session.get(User, member.id)
        assert (user.email, user.name) == (email, "Replaced")
    [event] = audit_events(app, "user.updated")
    assert event.details == {"fields": ["active", "email", "name", "role"]}


def test_put_needs_every_editable_field(client, admin, member):
    response = client.put(f"{USERS}{member.id}", json={"name": "Only"}, headers=admin.headers)

    assert response.status_code == 422
    assert {"email", "role", "active"} <= set(response.json["errors"])


def test_put_with_another_users_email_is_409(client, admin, member, make_user, app):
    other = make_user(login=False)
    body = {"email": other.email.upper(), "name": "X", "role": "user", "active": True}

    response = client.put(f"{USERS}{member.id}", json=body, headers=admin.headers)

    assert response.status_code == 409
    assert response.json["type"].endswith("/email-taken")
    with app.app_context():
        assert db.session.get(User, member.id).email == member.email


def test_put_keeping_the_users_own_email_in_another_case_is_allowed(client, admin, member):
    body = {"email": member.email.upper(), "name": "Same", "role": "user", "active": True}

    response = client.put(f"{USERS}{member.id}", json=body, headers=admin.headers)

    assert response.status_code == 200
    assert response.json["email"] == member.email.upper()


def test_a_user_cannot_put_even_their_own_record(client, member, app):
    body = {"email": member.email, "name": "Mine", "role": "user", "active": True}

    response = client.put(f"{USERS}{member.id}", json=body, headers=member.headers)

    assert response.status_code == 403
    with app.app_context():
        assert db.session.get(User, member.id).name == "Test User"


# --- DELETE /users/{id} ------------------------------------------------------------------


def test_admin_deletes_a_user_and_their_token_stops_working(client, admin, member, app):
    response = client.delete(f"{USERS}{member.id}", headers=admin.headers)

    assert response.status_code == 204
    assert response.get_data() == b""
    assert client.get(f"{USERS}{member.id}", headers=admin.headers).status_code == 404
    assert client.get("/api/v1/users/me", headers=member.headers).status_code == 401
    refresh = client.post("/api/v1/auth/refresh", json={"refresh_token": member.refresh_token})
    assert refresh.status_code == 401
    with app.app_context():
        assert db.session.get(User, member.id) is None
    [event] = audit_events(app, "user.deleted")
    assert (event.actor_id, event.target_id) == (admin.id, member.id)


def test_deleting_a_user_keeps_their_audit_events_with_their_id(client, admin, member, app):
    client.patch("/api/v1/users/me", json={"name": "Before deletion"}, headers=member.headers)
    as_actor = client.get(
        "/api/v1/audit-events/", query_string={"actor_id": str(member.id)}, headers=admin.headers
    ).json["items"]
    as_target = client.get(
        "/api/v1/audit-events/", query_string={"target_id": str(member.id)}, headers=admin.headers
    ).json["items"]
    assert {e["action"] for e in as_actor} >= {"auth.login_succeeded", "user.updated"}

    assert client.delete(f"{USERS}{member.id}", headers=admin.headers).status_code == 204

    after_actor = client.get(
        "/api/v1/audit-events/", query_string={"actor_id": str(member.id)}, headers=admin.headers
    ).json["items"]
    after_target = client.get(
        "/api/v1/audit-events/", query_string={"target_id": str(member.id)}, headers=admin.headers
    ).json["items"]
    assert {e["id"] for e in after_actor} == {e["id"] for e in as_actor}
    assert {e["actor_id"] for e in after_actor} == {str(member.id)}
    assert {e["id"] for e in as_target} < {e["id"] for e in after_target}
    assert "user.deleted" in {e["action"] for e in after_target}


def test_a_user_cannot_delete_themself_or_others(client, member, make_user, app):
    other = make_user(login=False)

    own = client.delete(f"{USERS}{member.id}", headers=member.headers)
    theirs = client.delete(f"{USERS}{other.id}", headers=member.headers)

    assert (own.status_code, theirs.status_code) == (403, 403)
    with app.app_context():
        assert db.session.get(User, member.id) is not None
        assert db.session.get(User, other.id) is not None


def test_an_admin_changing_a_users_email_sends_a_confirmation_and_keeps_the_old_login(
    client, admin, member, outbox
):
    body = {"email": "new-address@example.com", "name": "Moved", "role": "user", "active": True}
    response = client.put(f"/api/v1/users/{member.id}", json=body, headers=admin.headers)
    assert response.status_code == 200
    # Pending until the owner of the new address confirms it (tests/security/test_email_change).
    assert response.json["email"] == member.email
    assert response.json["email_verified"] is True
    assert response.json["name"] == "Moved"
    [message] = outbox("email_change", recipient="new-address@example.com")
    assert "token=" in message.payload["link"]


def test_an_admin_put_that_keeps_the_email_keeps_it_verified(client, admin, member, outbox):
    body = {"email": member.email.upper(), "name": "Same", "role": "user", "active": True}
    response = client.put(f"/api/v1/users/{member.id}", json=body, headers=admin.headers)
    assert response.status_code == 200
    assert response.json["email_verified"] is True
    assert outbox("verify_email") == []
