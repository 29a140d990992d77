"""Sessions idle out and end: a stolen session cannot live for weeks.

OWASP ASVS 4.0.3 V3.3.2 (L2): re-authentication after 12 hours or 30 minutes of inactivity —
here REFRESH_TOKEN_TTL (12 h absolute) and SESSION_IDLE_TTL (30 min idle) by default, with the
longer REMEMBER_ME_TTL / REMEMBER_ME_IDLE_TTL only for a login that asks for `remember_me`.
Also V3.3.1 (the ended session's tokens stop working) and V7.1.3 / V7.2.2 (its end is audited).

Idleness is simulated by moving `last_used_at` back in the database: the rule reads that column.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import jwt
import pytest
from sqlalchemy import select, update

from tests.support.accounts import STRONG_PASSWORD
from tests.support.mfa import code_at, enable
from tests.support.rows import stored_row
from webapp.audit.models import AuditEvent
from webapp.auth.models import AuthSession
from webapp.config import ConfigError, Settings
from webapp.extensions import db

LOGIN, REFRESH = "/api/v1/auth/login", "/api/v1/auth/refresh"
SESSIONS, ME = "/api/v1/auth/sessions", "/api/v1/users/me"


def login(client, account, **extra: Any) -> dict[str, Any]:
    response = client.post(
        LOGIN, json={"email": account.email, "password": STRONG_PASSWORD, **extra}
    )
    assert response.status_code == 200, response.get_json()
    return dict(response.json)


def session_id(tokens: dict[str, Any]) -> uuid.UUID:
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    return uuid.UUID(claims["sid"])


def idle_for(app, sid: uuid.UUID, seconds: int) -> None:
    """As if nobody had refreshed this session for `seconds`."""
    with app.app_context():
        row = db.session.get(AuthSession, sid)
        assert row is not None
        db.session.execute(
            update(AuthSession)
            .where(AuthSession.id == sid)
            .values(last_used_at=row.last_used_at - timedelta(seconds=seconds))
        )
        db.session.commit()
        db.session.remove()


def refresh(client, token: str):
    return client.post(REFRESH, json={"refresh_token": token})


def slug(response) -> str:
    return str(response.json["type"]).rsplit("/", 1)[-1]


def seconds_between(later: str | datetime, earlier: str | datetime) -> float:
    def parse(value: str | datetime) -> datetime:
        return value if isinstance(value, datetime) else datetime.fromisoformat(value)

    return (parse(later) - parse(earlier)).total_seconds()


def test_the_defaults_are_twelve_hours_absolute_and_thirty_minutes_idle():
    settings = Settings()
    assert settings.refresh_token_ttl == 12 * 3600
    assert settings.session_idle_ttl == 30 * 60
    assert settings.remember_me_ttl == 30 * 24 * 3600
    assert settings.remember_me_idle_ttl == 7 * 24 * 3600


def test_a_session_ends_twelve_hours_after_login(client, app, member):
    row = stored_row(app, AuthSession, session_id(login(client, member)))

    assert seconds_between(row.expires_at, row.created_at) == 12 * 3600
    assert row.remember_me is False


def test_a_refresh_after_thirty_idle_minutes_is_refused_and_ends_the_session(client, app, member):
    tokens = login(client, member)
    sid = session_id(tokens)
    idle_for(app, sid, 30 * 60 + 1)

    response = refresh(client, tokens["refresh_token"])

    assert response.status_code == 401
    assert slug(response) == "session-idle-timeout"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    row = stored_row(app, AuthSession, sid)
    assert row.revoked_at is not None
    assert row.revoked_reason == "idle_timeout"
    # The session is over: its access token and its refresh token are dead, and it is audited.
    assert (
        client.get(ME, headers={"Authorization": f"Bearer {tokens['access_token']}"}).status_code
        == 401
    )
    assert slug(refresh(client, tokens["refresh_token"])) == "invalid-refresh-token"
    with app.app_context():
        [event] = db.session.scalars(
            select(AuditEvent).where(AuditEvent.action == "auth.session_idle_timeout")
        ).all()
        assert event.target_id == sid
        assert event.actor_id == member.id
        assert event.details["idle_seconds"] >= 30 * 60
        db.session.remove()


def test_a_refresh_inside_the_idle_window_keeps_the_session_and_moves_the_deadline(
    client, app, member
):
    tokens = login(client, member)
    sid = session_id(tokens)
    idle_for(app, sid, 29 * 60)

    response = refresh(client, tokens["refresh_token"])
    listed = client.get(
        SESSIONS, headers={"Authorization": f"Bearer {response.json['access_token']}"}
    )

    assert response.status_code == 200
    [item] = [s for s in listed.json["items"] if s["id"] == str(sid)]
    # The idle deadline restarts at the refresh, not at the login.
    assert seconds_between(item["idle_expires_at"], item["last_used_at"]) == 30 * 60
    assert seconds_between(item["idle_expires_at"], item["created_at"]) > 30 * 60


def test_the_idle_timeout_follows_the_setting(make_app, make_user):
    app = make_app(session_idle_ttl=1000, access_token_ttl=300)
    client = app.test_client()
    account = make_user(login=False)
    tokens = login(client, account)
    idle_for(app, session_id(tokens), 1001)

    assert slug(refresh(client, tokens["refresh_token"])) == "session-idle-timeout"


def test_remember_me_gets_thirty_days_and_seven_idle_days(client, app, member):
    tokens = login(client, member, remember_me=True)
    sid = session_id(tokens)
    row = stored_row(app, AuthSession, sid)
    assert row.remember_me is True
    assert seconds_between(row.expires_at, row.created_at) == 30 * 24 * 3600

    idle_for(app, sid, 2 * 3600)
    assert refresh(client, tokens["refresh_token"]).status_code == 200

    later = login(client, member, remember_me=True)
    idle_for(app, session_id(later), 7 * 24 * 3600 + 1)
    assert slug(refresh(client, later["refresh_token"])) == "session-idle-timeout"


def test_the_session_list_shows_both_deadlines(client, member):
    remembered = login(client, member, remember_me=True)

    response = client.get(
        SESSIONS, headers={"Authorization": f"Bearer {remembered['access_token']}"}
    )

    by_id = {item["id"]: item for item in response.json["items"]}
    short = by_id[str(session_id({"access_token": member.access_token}))]
    long = by_id[str(session_id(remembered))]
    assert seconds_between(short["expires_at"], short["created_at"]) == 12 * 3600
    assert seconds_between(short["idle_expires_at"], short["last_used_at"]) == 30 * 60
    assert short["remember_me"] is False
    assert seconds_between(long["expires_at"], long["created_at"]) == 30 * 24 * 3600
    assert seconds_between(long["idle_expires_at"], long["last_used_at"]) == 7 * 24 * 3600
    assert long["remember_me"] is True


def test_the_idle_deadline_never_passes_the_absolute_end(make_app, make_user):
    app = make_app(refresh_token_ttl=3600, session_idle_ttl=3600, access_token_ttl=600)
    client = app.test_client()
    account = make_user(login=False)
    tokens = login(client, account)
    sid = session_id(tokens)
    idle_for(app, sid, 1800)
    assert refresh(client, tokens["refresh_token"]).status_code == 200

    listed = client.get(SESSIONS, headers={"Authorization": f"Bearer {tokens['access_token']}"})

    [item] = [s for s in listed.json["items"] if s["id"] == str(sid)]
    assert item["idle_expires_at"] == item["expires_at"]


def test_an_idle_session_is_no_longer_listed(client, app, member):
    other = login(client, member)
    idle_for(app, session_id(other), 31 * 60)

    listed = client.get(SESSIONS, headers=member.headers)

    assert [item["id"] for item in listed.json["items"]] == [
        str(session_id({"access_token": member.access_token}))
    ]


def test_remember_me_survives_the_mfa_step(client, app, member):
    secret, _ = enable(client, member)
    first = client.post(
        LOGIN, json={"email": member.email, "password": STRONG_PASSWORD, "remember_me": True}
    )
    assert first.json["mfa_required"] is True

    second = client.post(
        "/api/v1/auth/login/mfa",
        json={"mfa_token": first.json["mfa_token"], "code": code_at(secret, 1)},
    )

    assert second.status_code == 200, second.get_json()
    row = stored_row(app, AuthSession, session_id(second.json))
    assert row.remember_me is True
    assert seconds_between(row.expires_at, row.created_at) == 30 * 24 * 3600


def test_without_remember_me_the_mfa_step_gives_the_short_session(client, app, member):
    secret, _ = enable(client, member)
    first = client.post(LOGIN, json={"email": member.email, "password": STRONG_PASSWORD})

    second = client.post(
        "/api/v1/auth/login/mfa",
        json={"mfa_token": first.json["mfa_token"], "code": code_at(secret, 1)},
    )

    assert stored_row(app, AuthSession, session_id(second.json)).remember_me is False


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"access_token_ttl": 1800, "session_idle_ttl": 1800}, "SESSION_IDLE_TTL"),
        ({"access_token_ttl": 900, "remember_me_idle_ttl": 600}, "REMEMBER_ME_IDLE_TTL"),
        ({"session_idle_ttl": 50_000}, "SESSION_IDLE_TTL must not exceed REFRESH_TOKEN_TTL"),
        ({"remember_me_idle_ttl": 40 * 86400}, "REMEMBER_ME_IDLE_TTL must not exceed"),
        ({"session_idle_ttl": 0}, "SESSION_IDLE_TTL"),
    ],
)
def test_lifetimes_that_would_let_an_access_token_outlive_idleness_are_refused(changes, named):
    with pytest.raises(ConfigError, match=named):
        Settings().with_overrides(**changes)
