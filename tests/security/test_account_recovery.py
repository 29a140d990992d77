"""Who holds an address, and what a reset link can do.

- Look-alike addresses (the same under Unicode NFKC and case folding, e.g. with a full-width
  "a", U+FF41) are one account: nobody can impersonate another or squat their address that way.
- An unverified sign-up cannot hold an address for ever: it expires after
  `UNVERIFIED_ACCOUNT_TTL`, a registration then takes the address at once (no sweep needed), and
  the expired account answers like an unknown one.
- A reset link of a deactivated account neither sets its password nor clears its lockout, and
  the new password must differ from the current one.

OWASP ASVS 4.0.3:
- V2.3.1: an activation (unverified sign-up) expires after a set period;
- V2.5.6: the reset path cannot bypass the account's state (a deactivated account's link is an
  invalid token: no password, no lockout reset, no reactivation);
- V5.1.3 / V5.1.4: addresses are normalized (NFKC, case folded) before they are compared, so
  canonically equal identifiers are one account;
- a new password equal to the current one is refused (hardening; ASVS 4.0.3 has no item for it).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from tests.support.accounts import STRONG_PASSWORD
from webapp.auth.models import AuthSession
from webapp.db import utcnow
from webapp.extensions import db
from webapp.users.models import User

REGISTER = "/api/v1/auth/register"
LOGIN = "/api/v1/auth/login"
RESEND = "/api/v1/auth/verify-email/resend"
RESET = "/api/v1/auth/password-reset"
RESET_CONFIRM = "/api/v1/auth/password-reset/confirm"
FULL_WIDTH_A = "\uff41"  # NFKC-equivalent to "a"


def slug(response) -> str:
    return response.json["type"].rsplit("/", 1)[-1]


def register(client, email, password=STRONG_PASSWORD):
    return client.post(REGISTER, json={"email": email, "password": password, "name": "Sam"})


def user_count(app) -> int:
    with app.app_context():
        count = db.session.scalar(select(func.count()).select_from(User))
        db.session.remove()
    return int(count or 0)


def age_accounts(app, days: int) -> None:
    with app.app_context():
        db.session.execute(update(User).values(created_at=utcnow() - timedelta(days=days)))
        db.session.commit()
        db.session.remove()


def token_from(message) -> str:
    from urllib.parse import parse_qs, urlsplit

    return parse_qs(urlsplit(message.payload["link"]).query)["token"][0]


# --- look-alike addresses ------------------------------------------------------------------


def test_a_full_width_look_alike_of_a_registered_address_is_taken(client):
    assert register(client, "alice@example.com").status_code == 201

    response = register(client, f"{FULL_WIDTH_A}lice@example.com")

    assert response.status_code == 409
    assert slug(response) == "email-taken"


@pytest.mark.parametrize(
    "look_alike",
    [f"{FULL_WIDTH_A}da@example.com", "ADA@EXAMPLE.COM", "ada@ｅxample.com"],  # noqa: RUF001
)
def test_a_look_alike_signs_in_to_the_same_account(client, make_user, look_alike):
    make_user(email="ada@example.com", login=False)

    response = client.post(LOGIN, json={"email": look_alike, "password": STRONG_PASSWORD})

    assert response.status_code == 200, response.json


def test_an_admin_cannot_create_a_look_alike_account(client, admin, member):
    look_alike = member.email.replace("u", "\uff55", 1)  # a full-width "u"
    body = {"email": look_alike, "name": "X", "password": STRONG_PASSWORD}

    response = client.post("/api/v1/users/", json=body, headers=admin.headers)

    assert response.status_code == 409
    assert slug(response) == "email-taken"


# --- expired unverified sign-ups -----------------------------------------------------------


def test_a_registration_takes_the_address_of_an_expired_unverified_sign_up_at_once(client, app):
    squatter = register(client, "victim@example.com").json["id"]
    age_accounts(app, days=8)

    response = register(client, "victim@example.com")

    assert response.status_code == 201, response.json
    assert response.json["id"] != squatter
    assert user_count(app) == 1


def test_an_unverified_sign_up_younger_than_the_ttl_still_holds_its_address(client, app):
    register(client, "victim@example.com")
    age_accounts(app, days=6)

    assert register(client, "victim@example.com").status_code == 409


def test_an_old_verified_account_is_never_taken_over(client, app, make_user):
    make_user(email="owner@example.com", login=False)
    age_accounts(app, days=400)

    assert register(client, "owner@example.com").status_code == 409


def test_an_old_unverified_account_that_signed_in_before_is_kept(client, app, make_user):
    # Legacy state (an address changed before the fix) or REQUIRE_EMAIL_VERIFICATION=false:
    # an account that was used is not a squatter.
    make_user(email="used@example.com")
    with app.app_context():
        db.session.execute(update(User).values(email_verified_at=None))
        db.session.commit()
        assert db.session.scalar(select(func.count()).select_from(AuthSession)) == 1
        db.session.remove()
    age_accounts(app, days=30)

    assert register(client, "used@example.com").status_code == 409


def test_an_expired_sign_up_signs_in_like_an_unknown_account(client, app):
    register(client, "late@example.com")
    age_accounts(app, days=8)

    expired = client.post(LOGIN, json={"email": "late@example.com", "password": STRONG_PASSWORD})
    unknown = client.post(LOGIN, json={"email": "nope@example.com", "password": STRONG_PASSWORD})

    assert expired.status_code == unknown.status_code == 401
    assert slug(expired) == slug(unknown) == "invalid-credentials"


def test_an_expired_sign_up_gets_no_fresh_link_nor_reset(client, app, outbox):
    register(client, "late@example.com")
    age_accounts(app, days=8)

    assert client.post(RESEND, json={"email": "late@example.com"}).status_code == 202
    assert client.post(RESET, json={"email": "late@example.com"}).status_code == 202

    assert len(outbox("verify_email")) == 1
    assert outbox("password_reset") == []


def test_the_ttl_is_a_setting(make_app, client, app):
    short = make_app(unverified_account_ttl=86400).test_client()
    register(short, "quick@example.com")
    age_accounts(app, days=2)

    assert register(short, "quick@example.com").status_code == 201


# --- password reset ------------------------------------------------------------------------


def test_a_reset_link_does_not_set_the_password_of_a_deactivated_account(
    client, app, member, outbox
):
    client.post(RESET, json={"email": member.email})
    for _ in range(5):  # LOCKOUT_THRESHOLD: this client is now locked out of the account
        client.post(LOGIN, json={"email": member.email, "password": "wrong-Guess-12345"})
    with app.app_context():
        db.session.execute(update(User).where(User.id == member.id).values(active=False))
        db.session.commit()
        before = db.session.get(User, member.id).password_hash
        db.session.remove()

    new_password = "new-Strong-pass-77"
    response = client.post(
        RESET_CONFIRM,
        json={"token": token_from(outbox("password_reset")[0]), "password": new_password},
    )

    assert response.status_code == 422
    assert slug(response) == "invalid-token"
    with app.app_context():
        user = db.session.get(User, member.id)
        assert user.password_hash == before
        assert user.active is False
        db.session.remove()
    # The lockout was not lifted either (a successful reset would have cleared it).
    locked = client.post(LOGIN, json={"email": member.email, "password": new_password})
    assert locked.status_code == 429
    assert slug(locked) == "account-locked"


def test_a_reset_to_the_current_password_is_refused(client, member, outbox):
    client.post(RESET, json={"email": member.email})
    token = token_from(outbox("password_reset")[0])

    response = client.post(RESET_CONFIRM, json={"token": token, "password": member.password})

    assert response.status_code == 422
    assert slug(response) == "validation-failed"
    assert response.json["errors"]["password"]
    # One answer per link: it must not be an oracle for guessing the current password.
    retry = client.post(RESET_CONFIRM, json={"token": token, "password": member.password})
    assert retry.status_code == 422
    assert slug(retry) == "invalid-token"


def test_a_password_change_to_the_current_password_is_refused(client, member):
    response = client.post(
        "/api/v1/auth/password",
        json={"current_password": member.password, "new_password": member.password},
        headers=member.headers,
    )

    assert response.status_code == 422
    assert response.json["errors"]["new_password"]
