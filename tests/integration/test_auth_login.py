"""POST /api/v1/auth/login: check order, enumeration safety, lockout, hash upgrade, alerts."""

from __future__ import annotations

import time

import bcrypt
from sqlalchemy import select, update

from tests.support.accounts import STRONG_PASSWORD
from tests.support.rows import stored_row
from webapp.audit.models import AuditEvent
from webapp.extensions import db
from webapp.users.models import User

LOGIN = "/api/v1/auth/login"
WRONG = "wrong-Password-but-long-77"


def slug(response) -> str:
    return response.json["type"].rsplit("/", 1)[-1]


def login(client, email, password=STRONG_PASSWORD, **kwargs):
    return client.post(LOGIN, json={"email": email, "password": password}, **kwargs)


def from_ip(ip: str) -> dict:
    return {"environ_base": {"REMOTE_ADDR": ip}}


def audit(app, action: str) -> list[AuditEvent]:
    with app.app_context():
        query = select(AuditEvent).where(AuditEvent.action == action)
        rows = list(db.session.scalars(query.order_by(AuditEvent.created_at)))
        db.session.remove()
    return rows


def unverify(app, user_id) -> None:
    with app.app_context():
        db.session.execute(update(User).where(User.id == user_id).values(email_verified_at=None))
        db.session.commit()
        db.session.remove()


def test_login_returns_a_bearer_token_pair(client, make_user):
    account = make_user(login=False)

    response = login(client, account.email)

    assert response.status_code == 200
    body = response.json
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["access_token"].count(".") == 2
    assert body["refresh_token"]
    me = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200
    assert me.json["id"] == str(account.id)


def test_login_matches_the_email_case_insensitively(client, make_user):
    account = make_user(email="Mixed.Case@Example.com", login=False)

    assert login(client, "mixed.case@EXAMPLE.com").status_code == 200
    assert account.email == "Mixed.Case@Example.com"


def test_wrong_email_and_wrong_password_get_the_same_answer(client, make_user):
    account = make_user(login=False)

    unknown = login(client, "nobody-here@example.com", WRONG)
    wrong = login(client, account.email, WRONG)

    assert unknown.status_code == wrong.status_code == 401
    assert slug(unknown) == slug(wrong) == "invalid-credentials"
    assert unknown.headers["WWW-Authenticate"] == wrong.headers["WWW-Authenticate"]

    def comparable(response):
        return {k: v for k, v in response.json.items() if k != "request_id"}

    assert comparable(unknown) == comparable(wrong)


def test_an_unverified_account_with_the_right_password_gets_403(client, app, make_user):
    account = make_user(login=False)
    unverify(app, account.id)

    response = login(client, account.email)

    assert response.status_code == 403
    assert slug(response) == "email-unverified"


def test_credentials_are_checked_before_verification(client, app, make_user):
    account = make_user(login=False)
    unverify(app, account.id)

    response = login(client, account.email, WRONG)

    assert response.status_code == 401
    assert slug(response) == "invalid-credentials"


def test_lockout_is_checked_before_credentials_and_verification(client, make_app, make_user):
    app = make_app(lockout_threshold=2)
    locking_client = app.test_client()
    account = make_user(login=False)
    unverify(app, account.id)
    for _ in range(2):
        assert login(locking_client, account.email, WRONG).status_code == 401

    wrong = login(locking_client, account.email, WRONG)
    right = login(locking_client, account.email)

    assert wrong.status_code == right.status_code == 429
    assert slug(right) == "account-locked"
    assert int(right.headers["Retry-After"]) > 0


def test_repeated_failures_lock_the_account_even_for_the_right_password(make_app, make_user):
    app = make_app(lockout_threshold=3, lockout_duration=600)
    client = app.test_client()
    account = make_user(login=False)

    statuses = [login(client, account.email, WRONG).status_code for _ in range(3)]
    locked = login(client, account.email)

    assert statuses == [401, 401, 401]
    assert locked.status_code == 429
    assert slug(locked) == "account-locked"
    assert 0 < int(locked.headers["Retry-After"]) <= 600


def test_an_account_lockout_is_audited(make_app, make_user):
    app = make_app(lockout_threshold=3)
    client = app.test_client()
    account = make_user(login=False)

    for _ in range(3):
        login(client, account.email, WRONG)

    [event] = audit(app, "auth.lockout")
    assert event.target_id == account.id
    # The email is locked for this client IP (see tests/security/test_enumeration_and_lockout.py).
    assert event.details["scope"] == "account_ip"
    assert len(audit(app, "auth.login_failed")) == 3


def test_an_account_lockout_does_not_block_other_accounts(make_app, make_user):
    app = make_app(lockout_threshold=2)
    client = app.test_client()
    victim, bystander = make_user(login=False), make_user(login=False)
    for _ in range(2):
        login(client, victim.email, WRONG)

    assert login(client, victim.email).status_code == 429
    assert login(client, bystander.email).status_code == 200


def test_a_lockout_ends_when_its_time_is_up(make_app, make_user):
    app = make_app(lockout_threshold=2, lockout_duration=1)
    client = app.test_client()
    account = make_user(login=False)
    for _ in range(2):
        login(client, account.email, WRONG)
    assert login(client, account.email).status_code == 429
    time.sleep(1.1)

    response = login(client, account.email)

    assert response.status_code == 200
    # The count started again: one more failure does not lock.
    assert login(client, account.email, WRONG).status_code == 401
    assert login(client, account.email).status_code == 200


def test_a_successful_login_resets_the_failure_count(make_app, make_user):
    app = make_app(lockout_threshold=3)
    client = app.test_client()
    account = make_user(login=False)
    for _ in range(2):
        login(client, account.email, WRONG)

    assert login(client, account.email).status_code == 200
    for _ in range(2):
        login(client, account.email, WRONG)

    assert login(client, account.email).status_code == 200


def test_failures_from_one_ip_across_accounts_lock_that_ip(make_app, make_user):
    app = make_app(lockout_threshold=10, lockout_ip_threshold=3)
    client = app.test_client()
    accounts = [make_user(login=False) for _ in range(4)]
    for account in accounts[:3]:
        assert login(client, account.email, WRONG, **from_ip("198.51.100.7")).status_code == 401

    blocked = login(client, accounts[3].email, **from_ip("198.51.100.7"))
    elsewhere = login(client, accounts[3].email, **from_ip("198.51.100.8"))

    assert blocked.status_code == 429
    assert slug(blocked) == "account-locked"
    assert int(blocked.headers["Retry-After"]) > 0
    assert elsewhere.status_code == 200
    [event] = audit(app, "auth.lockout")
    assert event.details["scope"] == "ip"
    assert event.ip == "198.51.100.7"


def test_failures_for_unknown_emails_count_toward_the_ip_lockout(make_app, make_user):
    app = make_app(lockout_ip_threshold=3)
    client = app.test_client()
    account = make_user(login=False)
    for n in range(3):
        login(client, f"ghost{n}@example.com", WRONG, **from_ip("198.51.100.9"))

    assert login(client, account.email, **from_ip("198.51.100.9")).status_code == 429


def test_unverified_users_may_sign_in_when_verification_is_not_required(make_app, make_user):
    app = make_app(require_email_verification=False)
    account = make_user(login=False)
    unverify(app, account.id)

    relaxed = login(app.test_client(), account.email)

    assert relaxed.status_code == 200
    assert relaxed.json["access_token"]


def test_a_deactivated_account_cannot_sign_in(client, app, make_user):
    account = make_user(login=False)
    with app.app_context():
        db.session.execute(update(User).where(User.id == account.id).values(active=False))
        db.session.commit()
        db.session.remove()

    response = login(client, account.email)

    assert response.status_code == 401
    assert slug(response) == "invalid-credentials"


def test_a_bcrypt_hash_signs_in_and_is_upgraded_to_argon2id(client, app, make_user):
    account = make_user(login=False)
    legacy = bcrypt.hashpw(STRONG_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    with app.app_context():
        db.session.execute(update(User).where(User.id == account.id).values(password_hash=legacy))
        db.session.commit()
        db.session.remove()

    assert login(client, account.email, WRONG).status_code == 401
    assert stored_row(app, User, account.id).password_hash == legacy

    assert login(client, account.email).status_code == 200
    upgraded = stored_row(app, User, account.id).password_hash
    assert upgraded.startswith("$argon2id$")
    assert login(client, account.email).status_code == 200


def test_the_first_login_sends_no_new_login_alert(client, outbox, make_user):
    account = make_user()

    assert login(client, account.email).status_code == 200

    assert outbox("new_login") == []


def test_a_login_from_a_new_user_agent_sends_an_alert(client, outbox, make_user):
    account = make_user()

    response = login(client, account.email, headers={"User-Agent": "NewBrowser/2.0"})

    assert response.status_code == 200
    [alert] = outbox("new_login")
    assert alert.recipient == account.email
    assert alert.payload["user_agent"] == "NewBrowser/2.0"
    assert alert.payload["ip"] == "127.0.0.1"


def test_a_login_from_a_new_ip_sends_an_alert_and_a_known_one_does_not(client, outbox, make_user):
    account = make_user()

    login(client, account.email, **from_ip("203.0.113.50"))
    login(client, account.email, **from_ip("203.0.113.50"))

    [alert] = outbox("new_login")
    assert alert.payload["ip"] == "203.0.113.50"


def test_a_long_user_agent_is_recognised_on_the_next_login(client, outbox, make_user):
    account = make_user(login=False)
    agent = "VeryLongAgent/1.0 " + "x" * 700
    login(client, account.email, headers={"User-Agent": agent})

    login(client, account.email, headers={"User-Agent": agent})

    assert outbox("new_login") == []


def test_logins_are_audited_on_success_and_failure(client, app, make_user):
    account = make_user(login=False)

    ok = login(client, account.email, headers={"User-Agent": "AuditAgent/1"})
    login(client, account.email, WRONG)
    login(client, "nobody-here@example.com", WRONG)

    [success] = audit(app, "auth.login_succeeded")
    assert success.actor_id == account.id
    assert success.target_type == "session"
    assert success.user_agent == "AuditAgent/1"
    assert success.ip == "127.0.0.1"
    assert success.request_id == ok.headers["X-Request-ID"]
    failures = audit(app, "auth.login_failed")
    assert [f.target_id for f in failures] == [account.id, None]
    assert {f.details["reason"] for f in failures} == {"invalid_credentials"}


def test_login_rejects_unknown_fields_and_bad_emails(client):
    extra = client.post(
        LOGIN, json={"email": "a@example.com", "password": STRONG_PASSWORD, "otp": "1"}
    )
    bad_email = client.post(LOGIN, json={"email": "nope", "password": STRONG_PASSWORD})

    assert extra.status_code == 422
    assert "otp" in extra.json["errors"]
    assert bad_email.status_code == 422
    assert "email" in bad_email.json["errors"]
