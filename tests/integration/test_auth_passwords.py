"""Password reset (/password-reset, /password-reset/confirm) and change (/password)."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import select, update

from tests.support.accounts import STRONG_PASSWORD
from webapp.audit.models import AuditEvent
from webapp.auth.models import OneTimeToken
from webapp.db import utcnow
from webapp.extensions import db
from webapp.users.models import User

RESET = "/api/v1/auth/password-reset"
CONFIRM = "/api/v1/auth/password-reset/confirm"
CHANGE = "/api/v1/auth/password"
LOGIN = "/api/v1/auth/login"
NEW_PASSWORD = "quiet-Harbour-41-meadow"


def slug(response) -> str:
    return response.json["type"].rsplit("/", 1)[-1]


def login(client, email: str, password: str):
    return client.post(LOGIN, json={"email": email, "password": password})


def me(client, token: str):
    return client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})


def reset_token(outbox, email: str) -> str:
    [message] = outbox("password_reset", recipient=email)
    return parse_qs(urlsplit(message.payload["link"]).query)["token"][0]


def audit(app, action: str) -> list[AuditEvent]:
    with app.app_context():
        rows = list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == action)))
        db.session.remove()
    return rows


# --- reset request --------------------------------------------------------------------------


def test_reset_request_answers_the_same_for_known_and_unknown_emails(client, member):
    known = client.post(RESET, json={"email": member.email})
    unknown = client.post(RESET, json={"email": "nobody-here@example.com"})

    assert known.status_code == unknown.status_code == 202
    assert known.data == unknown.data

    def visible_headers(response):
        return {k: v for k, v in response.headers.items() if k != "X-Request-ID"}

    assert visible_headers(known) == visible_headers(unknown)


def test_reset_request_emails_a_token_link_only_to_a_known_account(client, outbox, member):
    client.post(RESET, json={"email": member.email.upper()})
    client.post(RESET, json={"email": "nobody-here@example.com"})

    messages = outbox("password_reset")
    assert [m.recipient for m in messages] == [member.email]
    link = messages[0].payload["link"]
    assert link.startswith("https://gatehouse.test/reset-password?token=")
    assert messages[0].payload["token"] == reset_token(outbox, member.email)


def test_reset_request_sends_nothing_to_a_deactivated_account(client, app, outbox, member):
    with app.app_context():
        db.session.execute(update(User).where(User.id == member.id).values(active=False))
        db.session.commit()
        db.session.remove()

    assert client.post(RESET, json={"email": member.email}).status_code == 202
    assert outbox("password_reset") == []


def test_reset_requests_are_audited_for_known_and_unknown_emails(client, app, member):
    client.post(RESET, json={"email": member.email})
    client.post(RESET, json={"email": "nobody-here@example.com"})

    events = audit(app, "auth.password_reset_requested")
    assert sorted(str(e.target_id) for e in events) == sorted([str(member.id), "None"])


def test_reset_request_validates_its_body(client):
    assert client.post(RESET, json={"email": "not-an-email"}).status_code == 422
    assert client.post(RESET, json={}).status_code == 422
    assert client.post(RESET, json={"email": "a@example.com", "x": 1}).status_code == 422


# --- reset confirm --------------------------------------------------------------------------


def test_reset_confirm_sets_the_new_password(client, outbox, member):
    client.post(RESET, json={"email": member.email})

    response = client.post(
        CONFIRM, json={"token": reset_token(outbox, member.email), "password": NEW_PASSWORD}
    )

    assert response.status_code == 200
    assert response.json == {"sessions_revoked": 1, "api_keys_revoked": 0}
    assert login(client, member.email, STRONG_PASSWORD).status_code == 401
    assert login(client, member.email, NEW_PASSWORD).status_code == 200


def test_reset_confirm_revokes_every_session_of_the_user(client, outbox, member):
    other = login(client, member.email, STRONG_PASSWORD).json
    client.post(RESET, json={"email": member.email})

    client.post(
        CONFIRM, json={"token": reset_token(outbox, member.email), "password": NEW_PASSWORD}
    )

    assert me(client, member.access_token).status_code == 401
    assert me(client, other["access_token"]).status_code == 401
    refreshed = client.post("/api/v1/auth/refresh", json={"refresh_token": other["refresh_token"]})
    assert refreshed.status_code == 401


def test_reset_confirm_token_works_only_once(client, outbox, member):
    client.post(RESET, json={"email": member.email})
    token = reset_token(outbox, member.email)
    assert client.post(CONFIRM, json={"token": token, "password": NEW_PASSWORD}).status_code == 200

    again = client.post(CONFIRM, json={"token": token, "password": "other-Canyon-55-ribbon"})

    assert again.status_code == 422
    assert slug(again) == "invalid-token"
    assert login(client, member.email, NEW_PASSWORD).status_code == 200


def test_a_reset_invalidates_the_users_other_outstanding_reset_links(client, outbox, member):
    client.post(RESET, json={"email": member.email})
    client.post(RESET, json={"email": member.email})
    first, second = (
        parse_qs(urlsplit(m.payload["link"]).query)["token"][0] for m in outbox("password_reset")
    )

    assert client.post(CONFIRM, json={"token": first, "password": NEW_PASSWORD}).status_code == 200
    stale = client.post(CONFIRM, json={"token": second, "password": "other-Canyon-55-ribbon"})

    assert stale.status_code == 422
    assert slug(stale) == "invalid-token"


def test_reset_confirm_rejects_an_unknown_token(client):
    response = client.post(CONFIRM, json={"token": "y" * 43, "password": NEW_PASSWORD})

    assert response.status_code == 422
    assert slug(response) == "invalid-token"


def test_reset_confirm_rejects_an_expired_token(client, app, outbox, member):
    client.post(RESET, json={"email": member.email})
    with app.app_context():
        db.session.execute(update(OneTimeToken).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
        db.session.remove()

    response = client.post(
        CONFIRM, json={"token": reset_token(outbox, member.email), "password": NEW_PASSWORD}
    )

    assert response.status_code == 422
    assert slug(response) == "invalid-token"
    assert login(client, member.email, STRONG_PASSWORD).status_code == 200


def test_reset_confirm_refuses_an_email_verification_token(client, outbox):
    client.post(
        "/api/v1/auth/register",
        json={"email": "grace@example.com", "password": STRONG_PASSWORD, "name": "Grace"},
    )
    [message] = outbox("verify_email")

    response = client.post(
        CONFIRM, json={"token": message.payload["token"], "password": NEW_PASSWORD}
    )

    assert response.status_code == 422
    assert slug(response) == "invalid-token"


def test_a_weak_password_on_confirm_is_422_and_leaves_the_token_usable(client, outbox, member):
    client.post(RESET, json={"email": member.email})
    token = reset_token(outbox, member.email)

    weak = client.post(CONFIRM, json={"token": token, "password": "password1234"})
    strong = client.post(CONFIRM, json={"token": token, "password": NEW_PASSWORD})

    assert weak.status_code == 422
    assert weak.json["errors"]["password"]
    assert strong.status_code == 200


def test_reset_confirm_lifts_an_account_lockout(make_app, outbox, member):
    app = make_app(lockout_threshold=2)
    client = app.test_client()
    for _ in range(2):
        login(client, member.email, "wrong-Password-but-long-77")
    assert login(client, member.email, STRONG_PASSWORD).status_code == 429
    client.post(RESET, json={"email": member.email})

    client.post(
        CONFIRM, json={"token": reset_token(outbox, member.email), "password": NEW_PASSWORD}
    )

    assert login(client, member.email, NEW_PASSWORD).status_code == 200


def test_reset_confirm_is_audited(client, app, outbox, member):
    client.post(RESET, json={"email": member.email})
    client.post(
        CONFIRM, json={"token": reset_token(outbox, member.email), "password": NEW_PASSWORD}
    )

    [event] = audit(app, "auth.password_reset")
    assert event.target_id == member.id
    assert event.actor_id == member.id
    revoked = audit(app, "session.revoked")
    assert [e.details["reason"] for e in revoked] == ["password_reset"]


# --- change ---------------------------------------------------------------------------------


def change(client, account, current: str, new: str):
    return client.post(
        CHANGE,
        json={"current_password": current, "new_password": new},
        headers=account.headers,
    )


def test_change_password_sets_the_new_password(client, member):
    response = change(client, member, STRONG_PASSWORD, NEW_PASSWORD)

    assert response.status_code == 204
    assert login(client, member.email, STRONG_PASSWORD).status_code == 401
    assert login(client, member.email, NEW_PASSWORD).status_code == 200


def test_change_password_revokes_other_sessions_and_keeps_the_current_one(client, app, member):
    other = login(client, member.email, STRONG_PASSWORD).json

    change(client, member, STRONG_PASSWORD, NEW_PASSWORD)

    assert me(client, member.access_token).status_code == 200
    assert me(client, other["access_token"]).status_code == 401
    [event] = audit(app, "auth.password_changed")
    assert event.target_id == member.id


def test_change_password_with_a_wrong_current_password_is_422(client, member):
    response = change(client, member, "not-my-Password-1234", NEW_PASSWORD)

    assert response.status_code == 422
    assert slug(response) == "invalid-current-password"
    assert response.json["errors"]["current_password"]
    assert login(client, member.email, STRONG_PASSWORD).status_code == 200


def test_change_password_to_a_weak_one_is_422_on_the_new_password_field(client, member):
    response = change(client, member, STRONG_PASSWORD, "password1234")

    assert response.status_code == 422
    assert response.json["errors"]["new_password"]
    assert login(client, member.email, STRONG_PASSWORD).status_code == 200


def test_change_password_refuses_the_email_as_the_new_password(client, make_user):
    account = make_user(email="long.local.part@example.com")

    response = change(client, account, STRONG_PASSWORD, account.email)

    assert response.status_code == 422
    assert response.json["errors"]["new_password"]


def test_change_password_needs_a_token_and_a_valid_body(client, member):
    body = {"current_password": STRONG_PASSWORD, "new_password": NEW_PASSWORD}

    assert client.post(CHANGE, json=body).status_code == 401
    missing = client.post(CHANGE, json={"new_password": NEW_PASSWORD}, headers=member.headers)
    assert missing.status_code == 422
    assert "current_password" in missing.json["errors"]


def test_wrong_current_passwords_count_towards_the_account_lockout(make_app, make_user):
    client = make_app(lockout_threshold=3).test_client()
    account = make_user()
    body = {"current_password": "not-my-password-at-all", "new_password": "fresh-Quartz-77-meadow"}
    statuses = [
        client.post("/api/v1/auth/password", json=body, headers=account.headers).status_code
        for _ in range(4)
    ]
    assert statuses == [422, 422, 422, 429]
    correct = {**body, "current_password": account.password}
    locked = client.post("/api/v1/auth/password", json=correct, headers=account.headers)
    assert locked.status_code == 429
    assert locked.json["type"].endswith("/account-locked")
    assert int(locked.headers["Retry-After"]) > 0
