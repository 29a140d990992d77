"""POST /logout and /sessions: revocation takes effect on the very next request."""

from __future__ import annotations

import uuid

import jwt
from sqlalchemy import select

from tests.support.accounts import STRONG_PASSWORD
from webapp.audit.models import AuditEvent
from webapp.auth.models import AuthSession
from webapp.extensions import db

LOGOUT = "/api/v1/auth/logout"
SESSIONS = "/api/v1/auth/sessions"


def slug(response) -> str:
    return response.json["type"].rsplit("/", 1)[-1]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def me(client, token: str):
    return client.get("/api/v1/users/me", headers=bearer(token))


def sid(token: str) -> str:
    return jwt.decode(token, options={"verify_signature": False})["sid"]


def second_login(client, account, agent: str = "SecondDevice/1.0") -> dict:
    response = client.post(
        "/api/v1/auth/login",
        json={"email": account.email, "password": STRONG_PASSWORD},
        headers={"User-Agent": agent},
    )
    assert response.status_code == 200
    return response.json


def audit(app, action: str) -> list[AuditEvent]:
    with app.app_context():
        rows = list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == action)))
        db.session.remove()
    return rows


# --- logout ---------------------------------------------------------------------------------


def test_logout_answers_204_and_the_access_token_stops_working(client, member):
    assert me(client, member.access_token).status_code == 200

    response = client.post(LOGOUT, headers=member.headers)

    assert response.status_code == 204
    assert response.data == b""
    after = me(client, member.access_token)
    assert after.status_code == 401
    assert after.headers["WWW-Authenticate"].startswith("Bearer")


def test_logout_also_kills_the_sessions_refresh_token(client, member):
    client.post(LOGOUT, headers=member.headers)

    response = client.post("/api/v1/auth/refresh", json={"refresh_token": member.refresh_token})

    assert response.status_code == 401
    assert slug(response) == "invalid-refresh-token"


def test_logout_leaves_the_users_other_sessions_alive(client, member):
    other = second_login(client, member)

    client.post(LOGOUT, headers=member.headers)

    assert me(client, other["access_token"]).status_code == 200


def test_logout_twice_is_refused_the_second_time(client, member):
    assert client.post(LOGOUT, headers=member.headers).status_code == 204

    assert client.post(LOGOUT, headers=member.headers).status_code == 401


def test_logout_needs_a_token(client):
    response = client.post(LOGOUT)

    assert response.status_code == 401
    assert "WWW-Authenticate" in response.headers


def test_logout_is_recorded_in_the_database_and_audited(client, app, member):
    client.post(LOGOUT, headers=member.headers)

    with app.app_context():
        session = db.session.get(AuthSession, uuid.UUID(sid(member.access_token)))
        assert session is not None
        assert session.revoked_at is not None
        assert session.revoked_reason == "logout"
        db.session.remove()
    [event] = audit(app, "auth.logout")
    assert str(event.target_id) == sid(member.access_token)
    assert event.actor_id == member.id


# --- sessions -------------------------------------------------------------------------------


def test_sessions_lists_the_callers_live_sessions_and_marks_the_current_one(client, member, admin):
    other = second_login(client, member)

    response = client.get(SESSIONS, headers=member.headers)

    assert response.status_code == 200
    items = response.json["items"]
    assert {item["id"] for item in items} == {sid(member.access_token), sid(other["access_token"])}
    current = {item["id"]: item["current"] for item in items}
    assert current == {sid(member.access_token): True, sid(other["access_token"]): False}
    agents = {item["id"]: item["user_agent"] for item in items}
    assert agents[sid(other["access_token"])] == "SecondDevice/1.0"
    assert sid(admin.access_token) not in current
    assert all(item["ip"] == "127.0.0.1" for item in items)


def test_sessions_omits_revoked_sessions(client, member):
    other = second_login(client, member)
    client.post(LOGOUT, headers=bearer(other["access_token"]))

    items = client.get(SESSIONS, headers=member.headers).json["items"]

    assert [item["id"] for item in items] == [sid(member.access_token)]


def test_deleting_another_of_my_sessions_revokes_it_at_once(client, app, member):
    other = second_login(client, member)
    assert me(client, other["access_token"]).status_code == 200

    response = client.delete(f"{SESSIONS}/{sid(other['access_token'])}", headers=member.headers)

    assert response.status_code == 204
    assert me(client, other["access_token"]).status_code == 401
    refreshed = client.post("/api/v1/auth/refresh", json={"refresh_token": other["refresh_token"]})
    assert refreshed.status_code == 401
    assert me(client, member.access_token).status_code == 200
    [event] = audit(app, "session.revoked")
    assert str(event.target_id) == sid(other["access_token"])


def test_deleting_someone_elses_session_is_404_and_leaves_it_alive(client, member, admin):
    response = client.delete(f"{SESSIONS}/{sid(admin.access_token)}", headers=member.headers)

    assert response.status_code == 404
    assert slug(response) == "not-found"
    assert me(client, admin.access_token).status_code == 200


def test_deleting_an_unknown_session_is_404(client, member):
    response = client.delete(f"{SESSIONS}/{uuid.uuid4()}", headers=member.headers)

    assert response.status_code == 404


def test_deleting_an_already_revoked_session_is_404(client, member):
    other = second_login(client, member)
    path = f"{SESSIONS}/{sid(other['access_token'])}"
    assert client.delete(path, headers=member.headers).status_code == 204

    assert client.delete(path, headers=member.headers).status_code == 404


def test_deleting_all_sessions_keeps_only_the_current_one(client, member, admin):
    others = [second_login(client, member, f"Device/{n}") for n in range(2)]

    response = client.delete(SESSIONS, headers=member.headers)

    assert response.status_code == 200
    assert response.json == {"revoked": 2}
    for other in others:
        assert me(client, other["access_token"]).status_code == 401
    assert me(client, member.access_token).status_code == 200
    assert me(client, admin.access_token).status_code == 200
    items = client.get(SESSIONS, headers=member.headers).json["items"]
    assert [item["id"] for item in items] == [sid(member.access_token)]


def test_deleting_all_sessions_with_no_others_revokes_nothing(client, member):
    response = client.delete(SESSIONS, headers=member.headers)

    assert response.json == {"revoked": 0}
    assert me(client, member.access_token).status_code == 200


def test_session_endpoints_need_a_token(client):
    assert client.get(SESSIONS).status_code == 401
    assert client.delete(SESSIONS).status_code == 401
    assert client.delete(f"{SESSIONS}/{uuid.uuid4()}").status_code == 401
