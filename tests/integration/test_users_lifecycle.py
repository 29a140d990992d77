"""Role changes, deactivation and the last-administrator rule."""

from __future__ import annotations

import threading

from sqlalchemy import select, text, update

from tests.support.rows import audit_events
from webapp.auth.models import AuthSession
from webapp.extensions import db
from webapp.users.models import User

USERS = "/api/v1/users/"
ME = "/api/v1/users/me"


def _user(app, user_id) -> User:
    with app.app_context():
        user = db.session.get(User, user_id)
        db.session.expunge_all()
        db.session.remove()
        return user


def _deactivate_in_db(app, user_id) -> None:
    with app.app_context():
        db.session.execute(update(User).where(User.id == user_id).values(active=False))
        db.session.commit()
        db.session.remove()


# --- PUT /users/{id}/role ----------------------------------------------------------------


def test_changing_a_role_is_audited_with_the_old_and_new_role(client, admin, member, app):
    response = client.put(f"{USERS}{member.id}/role", json={"role": "admin"}, headers=admin.headers)

    assert response.status_code == 200, response.json
    assert response.json["role"] == "admin"
    assert response.headers["ETag"]
    [event] = audit_events(app, "user.role_changed")
    assert (event.actor_id, event.target_id, event.target_type) == (admin.id, member.id, "user")
    assert event.details == {"old_role": "user", "role": "admin"}


def test_a_promotion_takes_effect_on_the_users_next_request(client, admin, member):
    assert client.get(USERS, headers=member.headers).status_code == 403

    client.put(f"{USERS}{member.id}/role", json={"role": "admin"}, headers=admin.headers)

    assert client.get(USERS, headers=member.headers).status_code == 200
    assert client.get(ME, headers=member.headers).json["role"] == "admin"


def test_a_demotion_takes_effect_on_the_users_next_request(client, admin, make_user):
    other_admin = make_user("admin")
    assert client.get(USERS, headers=other_admin.headers).status_code == 200

    response = client.put(
        f"{USERS}{other_admin.id}/role", json={"role": "user"}, headers=admin.headers
    )

    assert response.status_code == 200
    assert client.get(USERS, headers=other_admin.headers).status_code == 403


def test_setting_the_same_role_again_changes_nothing_and_is_not_audited(client, admin, member, app):
    before = client.get(f"{USERS}{member.id}", headers=admin.headers).headers["ETag"]

    response = client.put(f"{USERS}{member.id}/role", json={"role": "user"}, headers=admin.headers)

    assert response.status_code == 200
    assert response.headers["ETag"] == before
    assert audit_events(app, "user.role_changed") == []


def test_an_unknown_role_is_422(client, admin, member, app):
    response = client.put(f"{USERS}{member.id}/role", json={"role": "root"}, headers=admin.headers)

    assert response.status_code == 422
    assert "role" in response.json["errors"]
    assert _user(app, member.id).role == "user"


def test_a_member_cannot_change_roles_even_their_own(client, member, app):
    response = client.put(
        f"{USERS}{member.id}/role", json={"role": "admin"}, headers=member.headers
    )

    assert response.status_code == 403
    assert _user(app, member.id).role == "user"


def test_a_role_change_through_put_is_audited_as_a_role_change_too(client, admin, member, app):
    body = {"email": member.email, "name": "Promoted", "role": "admin", "active": True}

    response = client.put(f"{USERS}{member.id}", json=body, headers=admin.headers)

    assert response.status_code == 200
    [event] = audit_events(app, "user.role_changed")
    assert event.details == {"old_role": "user", "role": "admin"}
    assert client.get(USERS, headers=member.headers).status_code == 200


# --- deactivation ------------------------------------------------------------------------


def test_deactivating_a_user_revokes_every_session_at_once(client, admin, member, make_user, app):
    second_login = client.post(
        "/api/v1/auth/login", json={"email": member.email, "password": member.password}
    ).json
    assert client.get(ME, headers=member.headers).status_code == 200

    response = client.patch(f"{USERS}{member.id}", json={"active": False}, headers=admin.headers)

    assert response.status_code == 200
    assert response.json["active"] is False
    for token in (member.access_token, second_login["access_token"]):
        assert client.get(ME, headers={"Authorization": f"Bearer {token}"}).status_code == 401
    for refresh in (member.refresh_token, second_login["refresh_token"]):
        answer = client.post("/api/v1/auth/refresh", json={"refresh_token": refresh})
        assert answer.status_code == 401
    with app.app_context():
        sessions = db.session.scalars(
            select(AuthSession).where(AuthSession.user_id == member.id)
        ).all()
        assert len(sessions) == 2
        assert all(s.revoked_at is not None for s in sessions)
        assert {s.revoked_reason for s in sessions} == {"user_deactivated"}
    revoked = audit_events(app, "session.revoked")
    assert len(revoked) == 2
    assert {e.details["reason"] for e in revoked} == {"user_deactivated"}


def test_a_deactivated_user_cannot_sign_in_until_reactivated(client, admin, member):
    client.patch(f"{USERS}{member.id}", json={"active": False}, headers=admin.headers)
    credentials = {"email": member.email, "password": member.password}

    assert client.post("/api/v1/auth/login", json=credentials).status_code == 401

    reactivated = client.patch(f"{USERS}{member.id}", json={"active": True}, headers=admin.headers)
    assert reactivated.status_code == 200
    assert client.get(ME, headers=member.headers).status_code == 401  # old sessions stay revoked
    login = client.post("/api/v1/auth/login", json=credentials)
    assert login.status_code == 200
    fresh = {"Authorization": f"Bearer {login.json['access_token']}"}
    assert client.get(ME, headers=fresh).status_code == 200


def test_deactivating_through_put_revokes_sessions_too(client, admin, member, app):
    body = {"email": member.email, "name": "Off", "role": "user", "active": False}

    response = client.put(f"{USERS}{member.id}", json=body, headers=admin.headers)

    assert response.status_code == 200
    assert client.get(ME, headers=member.headers).status_code == 401
    with app.app_context():
        session = db.session.scalar(select(AuthSession).where(AuthSession.user_id == member.id))
        assert session.revoked_reason == "user_deactivated"


# --- the last active administrator ------------------------------------------------------


def test_the_last_admin_cannot_be_demoted(client, admin, app):
    response = client.put(f"{USERS}{admin.id}/role", json={"role": "user"}, headers=admin.headers)

    assert response.status_code == 409
    assert response.json["type"].endswith("/last-admin")
    assert _user(app, admin.id).role == "admin"
    assert audit_events(app, "user.role_changed") == []


def test_the_last_admin_cannot_be_deactivated(client, admin, app):
    response = client.patch(f"{USERS}{admin.id}", json={"active": False}, headers=admin.headers)

    assert response.status_code == 409
    assert response.json["type"].endswith("/last-admin")
    assert _user(app, admin.id).active is True
    assert client.get(ME, headers=admin.headers).status_code == 200


def test_the_last_admin_cannot_be_demoted_or_deactivated_through_put(client, admin, app):
    for role, active in (("user", True), ("admin", False), ("user", False)):
        body = {"email": admin.email, "name": "Boss", "role": role, "active": active}
        response = client.put(f"{USERS}{admin.id}", json=body, headers=admin.headers)
        assert response.status_code == 409, (role, active)
        assert response.json["type"].endswith("/last-admin")
    user = _user(app, admin.id)
    assert (user.role, user.active, user.name) == ("admin", True, "Test User")


def test_the_last_admin_cannot_be_deleted(client, admin, app):
    response = client.delete(f"{USERS}{admin.id}", headers=admin.headers)

    assert response.status_code == 409
    assert response.json["type"].endswith("/last-admin")
    assert _user(app, admin.id) is not None
    assert audit_events(app, "user.deleted") == []


def test_an_inactive_admin_does_not_count_as_a_remaining_admin(client, admin, make_user):
    dormant = make_user("admin", login=False)
    client.patch(f"{USERS}{dormant.id}", json={"active": False}, headers=admin.headers)

    response = client.put(f"{USERS}{admin.id}/role", json={"role": "user"}, headers=admin.headers)

    assert response.status_code == 409
    assert response.json["type"].endswith("/last-admin")


def test_with_a_second_active_admin_an_admin_can_step_down(client, admin, make_user, app):
    make_user("admin", login=False)

    response = client.put(f"{USERS}{admin.id}/role", json={"role": "user"}, headers=admin.headers)

    assert response.status_code == 200
    assert _user(app, admin.id).role == "user"
    assert client.get(USERS, headers=admin.headers).status_code == 403


def test_with_a_second_active_admin_an_admin_can_be_deleted(client, admin, make_user, app):
    other = make_user("admin")

    response = client.delete(f"{USERS}{admin.id}", headers=other.headers)

    assert response.status_code == 204
    assert _user(app, admin.id) is None


def test_an_already_inactive_admin_can_be_demoted_or_deleted_beside_one_active_admin(
    client, admin, make_user, app
):
    """Removing an admin who is already inactive leaves the number of active admins unchanged."""
    dormant = make_user("admin", login=False)
    _deactivate_in_db(app, dormant.id)
    spare = make_user("admin", login=False)
    _deactivate_in_db(app, spare.id)

    demoted = client.put(f"{USERS}{dormant.id}/role", json={"role": "user"}, headers=admin.headers)
    deleted = client.delete(f"{USERS}{spare.id}", headers=admin.headers)

    assert demoted.status_code == 200, demoted.json
    assert deleted.status_code == 204, deleted.json
    assert _user(app, dormant.id).role == "user"
    assert _user(app, spare.id) is None


def _backend_waits_on_a_lock(app) -> bool:
    with app.app_context():
        waiting = db.session.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
        )
        db.session.remove()
        return bool(waiting)


def test_two_admins_demoting_each_other_at_once_leave_one_admin(
    client, admin, make_user, app, monkeypatch
):
    """The second removal must see the first one: the count of admins cannot be read stale."""
    from webapp.users import service

    other = make_user("admin")
    first_counted, release_first = threading.Event(), threading.Event()
    original_record = service.audit.record

    def record(db_session, origin, action, **kwargs):
        if action == "user.role_changed" and kwargs.get("target_id") == other.id:
            first_counted.set()  # the first demotion passed its check and has not committed
            release_first.wait(timeout=60)
        return original_record(db_session, origin, action, **kwargs)

    monkeypatch.setattr(service.audit, "record", record)
    results: dict[str, int] = {}

    def demote(name, caller, target):
        response = app.test_client().put(
            f"{USERS}{target.id}/role", json={"role": "user"}, headers=caller.headers
        )
        results[name] = response.status_code

    first = threading.Thread(target=demote, args=("first", admin, other))
    second = threading.Thread(target=demote, args=("second", other, admin))
    first.start()
    assert first_counted.wait(timeout=60)
    second.start()
    while second.is_alive() and not _backend_waits_on_a_lock(app):
        second.join(timeout=0.05)
    release_first.set()
    first.join(timeout=60)
    second.join(timeout=60)

    assert results == {"first": 200, "second": 409}
    with app.app_context():
        admins = db.session.scalars(
            select(User).where(User.role == "admin", User.active.is_(True))
        ).all()
        assert [u.id for u in admins] == [admin.id]
