"""TOTP multi-factor authentication end to end: enrolment, confirmation with recovery codes, the
two-step login with codes computed here (pyotp), replay protection, recovery codes used once,
lockout, disabling, and the administrator's reset — on the real PostgreSQL and Redis."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
import pytest
from flask import Flask
from sqlalchemy import select, update

from tests.support.accounts import Account
from tests.support.mfa import MFA, code_at, enable, enrol
from tests.support.problems import assert_problem
from webapp.auth.models import OneTimeToken
from webapp.extensions import db
from webapp.http.idempotency_records import IdempotencyRecord
from webapp.mfa.models import TotpFactor

LOGIN, LOGIN_MFA = "/api/v1/auth/login", "/api/v1/auth/login/mfa"


def wrong_code(secret: str) -> str:
    """Six digits that are none of the codes accepted right now."""
    valid = {code_at(secret, offset) for offset in (-1, 0, 1, 2)}
    return next(f"{n:06d}" for n in range(1_000_000) if f"{n:06d}" not in valid)


def password_step(client, account: Account, **kwargs: Any) -> Any:
    return client.post(LOGIN, json={"email": account.email, "password": account.password}, **kwargs)


def mfa_token(client, account: Account) -> str:
    response = password_step(client, account)
    assert response.status_code == 200, response.get_json()
    assert response.json["mfa_required"] is True
    return str(response.json["mfa_token"])


def allow_current_code_again(app: Flask, user_id: uuid.UUID) -> None:
    """Forget the last accepted time step (as if 90 s had passed), so the current code is new."""
    with app.app_context():
        factor = db.session.get(TotpFactor, user_id)
        assert factor is not None
        factor.last_used_step = pyotp.TOTP("A" * 32).timecode(datetime.now(UTC)) - 2
        db.session.commit()
        db.session.remove()


def factor_row(app: Flask, user_id: uuid.UUID) -> TotpFactor | None:
    with app.app_context():
        row = db.session.get(TotpFactor, user_id)
        if row is not None:
            db.session.expunge(row)
        db.session.remove()
        return row


# --- enrolment ----------------------------------------------------------------------------------


def test_enrolment_returns_a_secret_and_an_otpauth_uri_for_the_account(client, member):
    response = client.post(f"{MFA}/totp", headers=member.headers)

    assert response.status_code == 201
    assert response.headers["Location"].endswith("/api/v1/auth/mfa")
    body = response.json
    parsed = pyotp.parse_uri(body["otpauth_uri"])
    assert body["otpauth_uri"].startswith("otpauth://totp/")
    assert parsed.secret == body["secret"]
    assert parsed.name == member.email
    assert parsed.issuer == "Gatehouse"
    assert (body["digits"], body["period"], body["algorithm"]) == (6, 30, "SHA1")
    assert client.get(MFA, headers=member.headers).json["totp"] == "pending"


def test_the_secret_is_stored_encrypted(app, client, member):
    secret = enrol(client, member)

    row = factor_row(app, member.id)

    assert row is not None
    assert row.secret_encrypted.startswith("v1.")
    assert secret not in row.secret_encrypted


def test_a_pending_enrolment_does_not_change_login(client, member):
    enrol(client, member)

    response = password_step(client, member)

    assert response.status_code == 200
    assert "access_token" in response.json


def test_confirmation_with_a_wrong_code_is_refused(client, member):
    secret = enrol(client, member)
    wrong = wrong_code(secret)

    response = client.post(f"{MFA}/totp/confirm", json={"code": wrong}, headers=member.headers)

    assert_problem(response, 422, "invalid-mfa-code")
    assert client.get(MFA, headers=member.headers).json["totp"] == "pending"


def test_confirmation_activates_totp_and_returns_ten_single_use_recovery_codes(client, member):
    _, codes = enable(client, member)

    status = client.get(MFA, headers=member.headers).json
    assert status["totp"] == "enabled"
    assert status["enabled_at"] is not None
    assert status["recovery_codes_remaining"] == 10
    assert len(codes) == len(set(codes)) == 10
    assert all(len(code.replace("-", "")) == 16 for code in codes)


def test_confirming_without_an_enrolment_or_twice_is_a_conflict(client, member):
    response = client.post(f"{MFA}/totp/confirm", json={"code": "123456"}, headers=member.headers)
    assert_problem(response, 409, "mfa-not-enrolled")

    secret, _ = enable(client, member)
    again = client.post(
        f"{MFA}/totp/confirm", json={"code": code_at(secret, 1)}, headers=member.headers
    )
    assert_problem(again, 409, "mfa-already-enabled")
    assert_problem(client.post(f"{MFA}/totp", headers=member.headers), 409, "mfa-already-enabled")


def test_a_new_enrolment_replaces_an_unconfirmed_one(client, member):
    first = enrol(client, member)
    second = enrol(client, member)

    assert first != second
    stale = client.post(
        f"{MFA}/totp/confirm", json={"code": wrong_code(second)}, headers=member.headers
    )
    assert_problem(stale, 422, "invalid-mfa-code")
    ok = client.post(f"{MFA}/totp/confirm", json={"code": code_at(second)}, headers=member.headers)
    assert ok.status_code == 200


def test_a_retried_enrolment_replays_the_same_secret_without_storing_it_in_the_clear(
    app, client, member
):
    headers = {**member.headers, "Idempotency-Key": "enrol-1"}

    first = client.post(f"{MFA}/totp", headers=headers)
    again = client.post(f"{MFA}/totp", headers=headers)

    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json["secret"] == first.json["secret"]
    with app.app_context():
        [stored] = db.session.scalars(select(IdempotencyRecord.response_body)).all()
        db.session.remove()
    assert first.json["secret"] not in stored


# --- the two-step login -------------------------------------------------------------------------


def test_with_totp_active_login_asks_for_the_second_factor_instead_of_tokens(client, member):
    enable(client, member)

    response = password_step(client, member)

    assert response.status_code == 200
    assert response.json["mfa_required"] is True
    assert response.json["mfa_token"]
    assert response.json["expires_in"] == 300
    assert "access_token" not in response.json
    assert "refresh_token" not in response.json


def test_a_current_code_completes_the_login_with_a_normal_session(client, member):
    secret, _ = enable(client, member)
    token = mfa_token(client, member)

    response = client.post(LOGIN_MFA, json={"mfa_token": token, "code": code_at(secret, 1)})

    assert response.status_code == 200, response.get_json()
    pair = response.json
    assert pair["token_type"] == "Bearer"
    auth = {"Authorization": f"Bearer {pair['access_token']}"}
    assert client.get("/api/v1/users/me", headers=auth).json["email"] == member.email
    refreshed = client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert refreshed.status_code == 200
    sessions = client.get("/api/v1/auth/sessions", headers=auth).json["items"]
    assert any(s["current"] for s in sessions)


def test_a_code_cannot_be_replayed_within_its_window(client, member):
    secret, _ = enable(client, member)
    code = code_at(secret, 1)
    first = client.post(LOGIN_MFA, json={"mfa_token": mfa_token(client, member), "code": code})
    assert first.status_code == 200

    replay = client.post(LOGIN_MFA, json={"mfa_token": mfa_token(client, member), "code": code})

    assert_problem(replay, 401, "invalid-mfa-code")


def test_the_code_that_confirmed_enrolment_cannot_be_used_to_sign_in(client, member):
    secret = enrol(client, member)
    code = code_at(secret)
    client.post(f"{MFA}/totp/confirm", json={"code": code}, headers=member.headers)

    response = client.post(LOGIN_MFA, json={"mfa_token": mfa_token(client, member), "code": code})

    assert_problem(response, 401, "invalid-mfa-code")


def test_an_mfa_token_is_single_use(app, client, member):
    secret, _ = enable(client, member)
    token = mfa_token(client, member)
    assert (
        client.post(LOGIN_MFA, json={"mfa_token": token, "code": code_at(secret, 1)}).status_code
        == 200
    )
    allow_current_code_again(app, member.id)

    again = client.post(LOGIN_MFA, json={"mfa_token": token, "code": code_at(secret)})

    assert_problem(again, 401, "invalid-mfa-token")


def test_an_expired_mfa_token_is_refused(app, client, member):
    secret, _ = enable(client, member)
    token = mfa_token(client, member)
    with app.app_context():
        db.session.execute(
            update(OneTimeToken)
            .where(OneTimeToken.purpose == "mfa_login")
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        db.session.commit()
        db.session.remove()

    response = client.post(LOGIN_MFA, json={"mfa_token": token, "code": code_at(secret, 1)})

    assert_problem(response, 401, "invalid-mfa-token")


def test_an_unknown_mfa_token_is_refused(client):
    response = client.post(LOGIN_MFA, json={"mfa_token": "made-up", "code": "123456"})

    assert_problem(response, 401, "invalid-mfa-token")


@pytest.mark.parametrize(
    "body",
    [
        {"mfa_token": "t"},
        {"mfa_token": "t", "code": "123456", "recovery_code": "abcd"},
        {"mfa_token": "t", "code": "12345"},
        {"mfa_token": "t", "code": "abcdef"},
    ],
)
def test_the_second_step_needs_exactly_one_well_formed_proof(client, body):
    assert_problem(client.post(LOGIN_MFA, json=body), 422, "validation-failed")


def test_a_recovery_code_signs_in_once(client, member):
    _, codes = enable(client, member)

    first = client.post(
        LOGIN_MFA, json={"mfa_token": mfa_token(client, member), "recovery_code": codes[0]}
    )
    again = client.post(
        LOGIN_MFA, json={"mfa_token": mfa_token(client, member), "recovery_code": codes[0]}
    )

    assert first.status_code == 200
    assert "access_token" in first.json
    assert_problem(again, 401, "invalid-mfa-code")
    auth = {"Authorization": f"Bearer {first.json['access_token']}"}
    assert client.get(MFA, headers=auth).json["recovery_codes_remaining"] == 9


def test_recovery_codes_are_accepted_without_dashes_and_in_capitals(client, member):
    _, codes = enable(client, member)
    typed = codes[3].replace("-", "").upper()

    response = client.post(
        LOGIN_MFA, json={"mfa_token": mfa_token(client, member), "recovery_code": typed}
    )

    assert response.status_code == 200


def test_another_users_recovery_code_does_not_work(client, make_user):
    alice, bob = make_user(), make_user()
    _, alices = enable(client, alice)
    enable(client, bob)

    response = client.post(
        LOGIN_MFA, json={"mfa_token": mfa_token(client, bob), "recovery_code": alices[0]}
    )

    assert_problem(response, 401, "invalid-mfa-code")


def test_wrong_codes_count_towards_the_lockout_and_a_right_password_does_not_reset_it(
    client, member
):
    secret, _ = enable(client, member)
    wrong = wrong_code(secret)
    statuses = []
    for _ in range(5):
        token = mfa_token(client, member)  # the right password each time
        statuses.append(
            client.post(LOGIN_MFA, json={"mfa_token": token, "code": wrong}).status_code
        )

    assert statuses == [401, 401, 401, 401, 401]
    locked = password_step(client, member)
    assert_problem(locked, 429, "account-locked")


def test_a_locked_account_cannot_complete_a_pending_second_step(client, member):
    secret, _ = enable(client, member)
    token = mfa_token(client, member)
    wrong = wrong_code(secret)
    for _ in range(5):
        client.post(LOGIN_MFA, json={"mfa_token": token, "code": wrong})

    response = client.post(LOGIN_MFA, json={"mfa_token": token, "code": code_at(secret, 1)})

    assert_problem(response, 429, "account-locked")


def test_second_step_attempts_are_rate_limited(make_app, make_user):
    app = make_app(ratelimit_enabled=True, ratelimit_auth="3 per minute")
    client = app.test_client()
    statuses = [
        client.post(LOGIN_MFA, json={"mfa_token": "x", "code": "123456"}).status_code
        for _ in range(4)
    ]

    assert statuses == [401, 401, 401, 429]


def test_the_two_steps_are_audited(client, member, admin):
    secret, codes = enable(client, member)
    client.post(
        LOGIN_MFA, json={"mfa_token": mfa_token(client, member), "code": wrong_code(secret)}
    )
    client.post(LOGIN_MFA, json={"mfa_token": mfa_token(client, member), "recovery_code": codes[0]})

    events = client.get(
        f"/api/v1/audit-events/?target_id={member.id}&limit=100", headers=admin.headers
    ).json["items"]
    actions = [e["action"] for e in events]
    assert "mfa.enrolment_started" in actions
    assert "mfa.enabled" in actions
    assert "mfa.recovery_code_used" in actions
    failures = [e for e in events if e["action"] == "auth.login_failed"]
    assert any(e["details"].get("reason") == "invalid_totp" for e in failures)
    succeeded = client.get(
        f"/api/v1/audit-events/?action=auth.login_succeeded&actor_id={member.id}",
        headers=admin.headers,
    ).json["items"]
    assert any(e["details"].get("mfa") == "recovery_code" for e in succeeded)


# --- disabling and reset ------------------------------------------------------------------------


def test_disabling_needs_the_password_or_a_current_code(app, client, member):
    secret, _ = enable(client, member)

    wrong = client.delete(
        f"{MFA}/totp", json={"password": "not-the-password"}, headers=member.headers
    )
    neither = client.delete(f"{MFA}/totp", json={}, headers=member.headers)
    assert_problem(wrong, 422, "invalid-current-password")
    assert_problem(neither, 422, "validation-failed")

    allow_current_code_again(app, member.id)
    ok = client.delete(f"{MFA}/totp", json={"code": code_at(secret)}, headers=member.headers)

    assert ok.status_code == 204
    assert factor_row(app, member.id) is None
    assert "access_token" in password_step(client, member).json
    assert_problem(
        client.delete(f"{MFA}/totp", json={"password": member.password}, headers=member.headers),
        404,
        "mfa-not-enabled",
    )


def test_disabling_with_the_password_works_and_a_wrong_code_counts_as_a_failure(client, member):
    secret, _ = enable(client, member)
    wrong = wrong_code(secret)

    refused = client.delete(f"{MFA}/totp", json={"code": wrong}, headers=member.headers)
    ok = client.delete(f"{MFA}/totp", json={"password": member.password}, headers=member.headers)

    assert_problem(refused, 422, "invalid-mfa-code")
    assert ok.status_code == 204
    assert client.get(MFA, headers=member.headers).json == {
        "totp": "disabled",
        "enabled_at": None,
        "recovery_codes_remaining": 0,
    }


def test_a_pending_enrolment_can_be_cancelled_with_its_code(client, member):
    secret = enrol(client, member)

    response = client.delete(f"{MFA}/totp", json={"code": code_at(secret)}, headers=member.headers)

    assert response.status_code == 204
    assert client.get(MFA, headers=member.headers).json["totp"] == "disabled"


def test_an_administrator_resets_a_users_mfa_and_it_is_audited(app, client, member, admin):
    enable(client, member)

    response = client.delete(f"/api/v1/users/{member.id}/mfa", headers=admin.headers)

    assert response.status_code == 204
    assert factor_row(app, member.id) is None
    assert "access_token" in password_step(client, member).json
    [event] = client.get(
        f"/api/v1/audit-events/?action=mfa.reset&target_id={member.id}", headers=admin.headers
    ).json["items"]
    assert event["actor_id"] == str(admin.id)
    assert event["details"]["had_mfa"] is True


def test_a_user_cannot_reset_mfa_and_an_unknown_user_is_404(client, member, admin):
    assert_problem(
        client.delete(f"/api/v1/users/{member.id}/mfa", headers=member.headers), 403, "forbidden"
    )
    assert_problem(
        client.delete(f"/api/v1/users/{uuid.uuid4()}/mfa", headers=admin.headers), 404, "not-found"
    )


def test_login_documents_both_response_shapes(client):
    document = client.get("/api/openapi.json").json
    schema = document["paths"]["/api/v1/auth/login"]["post"]["responses"]["200"]["content"][
        "application/json"
    ]["schema"]

    refs = {option["$ref"].rsplit("/", 1)[1] for option in schema["oneOf"]}
    assert refs == {"TokenPairOut", "MfaChallengeOut"}
    challenge = document["components"]["schemas"]["MfaChallengeOut"]
    assert set(challenge["required"]) == {"mfa_required", "mfa_token", "expires_in"}
