"""An email change never locks the user out, and a new verification link can be asked for.

A new address (set by an administrator or by the user) stays pending until its owner confirms the
link mailed to it (one confirmation, no second welcome email), the login does not change before
that, the old address is told, and a fresh sign-up link can be asked for without revealing which
addresses have accounts.

OWASP ASVS 4.0.3:
- V2.2.3: a notification goes to the old address once the email changes (no link in it);
- V2.3.1: verification links are random, single use, expire, and a fresh one replaces the old;
- V2.5.6: the recovery channel (the address) changes only through a link to the new address;
- V3.7.1: the self-service change needs a full, valid session (the recent-authentication check
  is wired at merge, see the route);
- V2.2.1 / V11.1.4: the resend endpoint is limited per IP and per mailbox, and answers the same
  for every address (no account enumeration).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import redis
from sqlalchemy import select, text, update

from tests.support.accounts import STRONG_PASSWORD
from webapp.extensions import db
from webapp.users.models import User

REGISTER = "/api/v1/auth/register"
VERIFY = "/api/v1/auth/verify-email"
RESEND = "/api/v1/auth/verify-email/resend"
LOGIN = "/api/v1/auth/login"
MY_EMAIL = "/api/v1/users/me/email"


def token_from(message) -> str:
    return parse_qs(urlsplit(message.payload["link"]).query)["token"][0]


def slug(response) -> str:
    return response.json["type"].rsplit("/", 1)[-1]


def login(client, email, password=STRONG_PASSWORD):
    return client.post(LOGIN, json={"email": email, "password": password})


def put_email(client, admin, user_id, email, **fields):
    body = {"email": email, "name": "Moved", "role": "user", "active": True, **fields}
    return client.put(f"/api/v1/users/{user_id}", json=body, headers=admin.headers)


def backdate_tokens(app, seconds: int) -> None:
    """Make every token look `seconds` older (the resend and change throttles read it)."""
    with app.app_context():
        db.session.execute(
            text("UPDATE one_time_tokens SET created_at = created_at - make_interval(secs => :s)"),
            {"s": seconds},
        )
        db.session.commit()
        db.session.remove()


# --- the lock-out --------------------------------------------------------------------------


def test_an_email_changed_by_an_admin_can_be_confirmed_and_sends_no_second_welcome(
    client, admin, member, outbox
):
    welcomes = len(outbox("welcome"))
    assert put_email(client, admin, member.id, "moved@example.com").status_code == 200
    [link] = outbox(recipient="moved@example.com")

    response = client.post(VERIFY, json={"token": token_from(link)})

    assert response.status_code == 204, response.json
    assert len(outbox("welcome")) == welcomes
    assert login(client, "moved@example.com").status_code == 200


def test_a_legacy_unverified_address_whose_account_was_welcomed_can_still_be_verified(
    client, app, member, outbox
):
    # The state the bug left behind: welcomed once, then put back to unverified with a link.
    from webapp.auth import email_tokens
    from webapp.context import SYSTEM

    with app.app_context():
        user = db.session.get(User, member.id)
        user.email_verified_at = None
        email_tokens.queue_verification_email(db.session, SYSTEM, user)
        db.session.commit()
        db.session.remove()
    [link] = outbox("verify_email")

    response = client.post(VERIFY, json={"token": token_from(link)})

    assert response.status_code == 204, response.json
    assert len(outbox("welcome")) == 1


# --- pending address -----------------------------------------------------------------------


def test_an_admin_change_keeps_the_old_login_until_the_new_address_confirms(
    client, admin, member, outbox
):
    put_email(client, admin, member.id, "typo@example.com")

    # A typo'd address neither locks the user out nor becomes the login unconfirmed.
    assert login(client, member.email).status_code == 200
    assert login(client, "typo@example.com").status_code == 401
    [link] = outbox("email_change")
    assert link.recipient == "typo@example.com"


def test_a_user_changes_their_own_email_through_the_emailed_link(client, app, member, outbox):
    response = client.post(MY_EMAIL, json={"email": "mine@example.com"}, headers=member.headers)

    assert response.status_code == 202, response.json
    me = client.get("/api/v1/users/me", headers=member.headers).json
    assert me["email"] == member.email
    assert login(client, "mine@example.com").status_code == 401
    [link] = outbox("email_change", recipient="mine@example.com")
    assert outbox("security_notice") == []

    assert client.post(VERIFY, json={"token": token_from(link)}).status_code == 204

    me = client.get("/api/v1/users/me", headers=member.headers).json
    assert (me["email"], me["email_verified"]) == ("mine@example.com", True)
    assert login(client, "mine@example.com").status_code == 200
    assert login(client, member.email).status_code == 401
    [notice] = outbox("security_notice")
    assert notice.recipient == member.email
    assert notice.payload["event"] == "email_changed"
    assert ["New sign-in address", "mine@example.com"] in notice.payload["details"]
    assert notice.payload["ip"] == "127.0.0.1"
    assert notice.payload["user_agent"]
    assert "link" not in notice.payload
    assert "token" not in notice.payload


def test_the_email_change_endpoint_refuses_anonymous_callers(client):
    anonymous = client.post(MY_EMAIL, json={"email": "x@example.com"})
    assert anonymous.status_code == 401


def test_only_the_newest_email_change_link_works(client, app, member, outbox):
    client.post(MY_EMAIL, json={"email": "first@example.com"}, headers=member.headers)
    backdate_tokens(app, 120)
    client.post(MY_EMAIL, json={"email": "second@example.com"}, headers=member.headers)
    [first] = outbox("email_change", recipient="first@example.com")

    response = client.post(VERIFY, json={"token": token_from(first)})

    assert response.status_code == 422
    assert slug(response) == "invalid-token"
    assert login(client, "first@example.com").status_code == 401


def test_email_change_requests_are_throttled_per_account(client, member):
    first = client.post(MY_EMAIL, json={"email": "a1@example.com"}, headers=member.headers)
    second = client.post(MY_EMAIL, json={"email": "a2@example.com"}, headers=member.headers)

    assert first.status_code == 202
    assert second.status_code == 429
    assert int(second.headers["Retry-After"]) >= 1


def test_an_address_taken_before_confirmation_is_a_409_and_changes_nothing(
    client, member, make_user, outbox
):
    client.post(MY_EMAIL, json={"email": "contested@example.com"}, headers=member.headers)
    make_user(email="contested@example.com", login=False)
    [link] = outbox("email_change")

    response = client.post(VERIFY, json={"token": token_from(link)})

    assert response.status_code == 409
    assert slug(response) == "email-taken"
    assert login(client, member.email).status_code == 200


def test_changing_to_an_address_another_account_holds_is_409(client, member, make_user):
    other = make_user(login=False)

    response = client.post(MY_EMAIL, json={"email": other.email.upper()}, headers=member.headers)

    assert response.status_code == 409
    assert slug(response) == "email-taken"


def test_confirming_an_email_change_kills_reset_links_sent_to_the_old_address(
    client, member, outbox
):
    client.post("/api/v1/auth/password-reset", json={"email": member.email})
    [reset] = outbox("password_reset")
    client.post(MY_EMAIL, json={"email": "fresh@example.com"}, headers=member.headers)
    client.post(VERIFY, json={"token": token_from(outbox("email_change")[0])})

    response = client.post(
        "/api/v1/auth/password-reset/confirm",
        json={"token": token_from(reset), "password": "another-Strong-pass-42"},
    )

    assert response.status_code == 422
    assert slug(response) == "invalid-token"


def test_a_deactivated_account_cannot_complete_an_email_change(client, admin, member, app, outbox):
    client.post(MY_EMAIL, json={"email": "late@example.com"}, headers=member.headers)
    with app.app_context():
        db.session.execute(update(User).where(User.id == member.id).values(active=False))
        db.session.commit()
        db.session.remove()

    response = client.post(VERIFY, json={"token": token_from(outbox("email_change")[0])})

    assert response.status_code == 422
    with app.app_context():
        assert db.session.get(User, member.id).email == member.email
        db.session.remove()


# --- resend --------------------------------------------------------------------------------


def register(client, email="grace@example.com"):
    return client.post(REGISTER, json={"email": email, "password": STRONG_PASSWORD, "name": "G"})


def test_resend_sends_a_fresh_link_and_the_older_one_stops_working(client, app, outbox):
    register(client)
    backdate_tokens(app, 120)
    [old] = outbox("verify_email")

    response = client.post(RESEND, json={"email": "GRACE@example.com"})

    assert response.status_code == 202
    _old_link, new_link = outbox("verify_email")
    assert new_link.recipient == "grace@example.com"
    assert client.post(VERIFY, json={"token": token_from(old)}).status_code == 422
    assert client.post(VERIFY, json={"token": token_from(new_link)}).status_code == 204
    assert login(client, "grace@example.com").status_code == 200


def _answer(response) -> tuple:
    varying = {"X-Request-ID", "Date", "Traceparent"}
    headers = sorted((k, v) for k, v in response.headers.items() if k not in varying)
    return response.status_code, response.get_data(), headers


def test_resend_answers_the_same_for_unknown_verified_and_unverified_addresses(
    client, app, member, outbox
):
    register(client, "pending@example.com")
    backdate_tokens(app, 120)

    unknown = client.post(RESEND, json={"email": "nobody@example.com"})
    verified = client.post(RESEND, json={"email": member.email})
    unverified = client.post(RESEND, json={"email": "pending@example.com"})

    assert unknown.status_code == 202
    assert _answer(unknown) == _answer(verified) == _answer(unverified)
    assert [m.recipient for m in outbox("verify_email")] == ["pending@example.com"] * 2


def test_resend_sends_at_most_one_link_a_minute_to_a_mailbox(client, outbox):
    register(client)

    for _ in range(3):
        assert client.post(RESEND, json={"email": "grace@example.com"}).status_code == 202

    assert len(outbox("verify_email")) == 1


def test_resend_sends_at_most_five_links_a_day_to_a_mailbox(client, app, outbox):
    register(client)
    for _ in range(6):
        backdate_tokens(app, 61)
        client.post(RESEND, json={"email": "grace@example.com"})

    assert len(outbox("verify_email")) == 5


@pytest.fixture
def limited_client(make_app, redis_url):
    redis.Redis.from_url(redis_url).flushdb()
    return make_app(ratelimit_enabled=True, ratelimit_auth="2 per minute").test_client()


def test_resend_is_rate_limited_per_ip(limited_client):
    answers = [
        limited_client.post(RESEND, json={"email": f"n{i}@example.com"}).status_code
        for i in range(3)
    ]

    assert answers == [202, 202, 429]


def test_verification_is_one_endpoint_for_sign_ups_and_changes_and_no_other_token(
    client, app, member, outbox
):
    client.post("/api/v1/auth/password-reset", json={"email": member.email})
    response = client.post(VERIFY, json={"token": token_from(outbox("password_reset")[0])})
    assert response.status_code == 422
    with app.app_context():
        assert db.session.scalar(select(User.email).where(User.id == member.id)) == member.email
        db.session.remove()
