"""The web application's contract with the API (consumer `gatehouse-web-app`): sign up, verify the
email, sign in (and be refused a wrong password), refresh, read the profile and the sessions, sign
out — each call of its client against Pact's mock server, which records the interactions into
the pact. Values the web app cannot know in advance (a verification token, a signed-in user's
tokens) come from the provider state at verification (`generate.provider_state`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pact import Pact, generate, match

from tests.support.contracts import (
    PROVIDER,
    WEB_APP,
    ApiError,
    WebAppClient,
    assert_same_contract,
)

EMAIL = "ada@example.com"
PASSWORD = "pale-Orbit-93-lantern"
WRONG = "pale-Orbit-93-lanterns"
ACCOUNT = {"email": EMAIL, "password": PASSWORD, "name": "Ada"}
UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
JWT = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"
REFRESH = r"^[0-9a-f]{32}\.[A-Za-z0-9_-]+$"
TIMESTAMP = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$"
# Examples only: the verification substitutes the provider state's values or matches the pattern.
USER_ID = "5d3c9a1e-8b7f-4c2d-9e6a-1f0b2c3d4e5f"
EXAMPLE_ACCESS = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhZGEifQ.c2lnbmF0dXJl"
EXAMPLE_REFRESH = "0f1e2d3c4b5a69788796a5b4c3d2e1f0.bWFj"


def user_body(*, verified: bool) -> dict[str, object]:
    return {
        "id": match.regex(USER_ID, regex=UUID),
        "email": EMAIL,
        "name": match.str("Ada"),
        "role": match.str("user"),
        "active": True,
        "email_verified": verified,
        "created_at": match.regex("2026-12-03T13:45:02.123456+00:00", regex=TIMESTAMP),
        "updated_at": match.regex("2026-12-03T13:45:02.123456+00:00", regex=TIMESTAMP),
    }


TOKEN_PAIR = {
    "access_token": match.regex(EXAMPLE_ACCESS, regex=JWT),
    "refresh_token": match.regex(EXAMPLE_REFRESH, regex=REFRESH),
    "token_type": "Bearer",
    "expires_in": match.int(900),
}


def bearer() -> object:
    return match.type(
        f"Bearer {EXAMPLE_ACCESS}", generator=generate.provider_state("Bearer ${access_token}")
    )


def expect_sign_up(pact: Pact) -> None:
    (
        pact.upon_receiving("a sign-up")
        .given("no account uses the email", email=EMAIL)
        .with_request("POST", "/api/v1/auth/register")
        .with_body(ACCOUNT, content_type="application/json")
        .will_respond_with(201)
        .with_header(
            "Location",
            match.regex(f"/api/v1/users/{USER_ID}", regex=r"^/api/v1/users/[0-9a-f-]{36}$"),
        )
        .with_body(user_body(verified=False), content_type="application/json")
    )


def expect_verify_email(pact: Pact) -> None:
    (
        pact.upon_receiving("an email verification")
        .given(
            "an unverified sign-up with a known verification token",
            email=EMAIL,
            password=PASSWORD,
        )
        .with_request("POST", "/api/v1/auth/verify-email")
        .with_body(
            {
                "token": match.type(
                    "the-emailed-token", generator=generate.provider_state("${token}")
                )
            },
            content_type="application/json",
        )
        .will_respond_with(204)
    )


def expect_sign_in(pact: Pact) -> None:
    (
        pact.upon_receiving("a sign-in with email and password")
        .given("a verified account with a known password", email=EMAIL, password=PASSWORD)
        .with_request("POST", "/api/v1/auth/login")
        .with_body({"email": EMAIL, "password": PASSWORD}, content_type="application/json")
        .will_respond_with(200)
        .with_body(TOKEN_PAIR, content_type="application/json")
    )


def expect_wrong_password(pact: Pact) -> None:
    (
        pact.upon_receiving("a sign-in with a wrong password")
        .given("a verified account with a known password", email=EMAIL, password=PASSWORD)
        .with_request("POST", "/api/v1/auth/login")
        .with_body({"email": EMAIL, "password": WRONG}, content_type="application/json")
        .will_respond_with(401)
        .with_body(
            {"type": "/problems/invalid-credentials", "status": 401, "detail": match.str("…")},
            content_type="application/problem+json",
        )
    )


def expect_refresh(pact: Pact) -> None:
    (
        pact.upon_receiving("a refresh of the tokens")
        .given("a signed-in account", email=EMAIL, password=PASSWORD)
        .with_request("POST", "/api/v1/auth/refresh")
        .with_body(
            {
                "refresh_token": match.type(
                    EXAMPLE_REFRESH, generator=generate.provider_state("${refresh_token}")
                )
            },
            content_type="application/json",
        )
        .will_respond_with(200)
        .with_body(TOKEN_PAIR, content_type="application/json")
    )


def expect_profile(pact: Pact) -> None:
    (
        pact.upon_receiving("a request for the signed-in user's profile")
        .given("a signed-in account", email=EMAIL, password=PASSWORD)
        .with_request("GET", "/api/v1/users/me")
        .with_header("Authorization", bearer())
        .will_respond_with(200)
        .with_header("ETag", match.regex(f'"{USER_ID}.2"', regex=r'^"[0-9a-f-]{36}\.\d+"$'))
        .with_body(user_body(verified=True), content_type="application/json")
    )


def expect_sessions(pact: Pact) -> None:
    session = {
        "id": match.regex("9a1b2c3d-4e5f-4061-8293-a4b5c6d7e8f9", regex=UUID),
        "created_at": match.regex("2026-12-03T13:45:02.123456+00:00", regex=TIMESTAMP),
        "last_used_at": match.regex("2026-12-03T13:45:02.123456+00:00", regex=TIMESTAMP),
        "expires_at": match.regex("2026-12-04T01:45:02.123456+00:00", regex=TIMESTAMP),
        "idle_expires_at": match.regex("2026-12-03T14:15:02.123456+00:00", regex=TIMESTAMP),
        "remember_me": match.bool(False),
        "current": match.bool(True),
    }
    (
        pact.upon_receiving("a request for the signed-in user's sessions")
        .given("a signed-in account", email=EMAIL, password=PASSWORD)
        .with_request("GET", "/api/v1/auth/sessions")
        .with_header("Authorization", bearer())
        .will_respond_with(200)
        .with_body({"items": match.each_like(session, min=1)}, content_type="application/json")
    )


def expect_sign_out(pact: Pact) -> None:
    (
        pact.upon_receiving("a sign-out")
        .given("a signed-in account", email=EMAIL, password=PASSWORD)
        .with_request("POST", "/api/v1/auth/logout")
        .with_header("Authorization", bearer())
        .will_respond_with(204)
    )


def test_the_web_app_from_sign_up_to_sign_out(tmp_path: Path) -> None:
    """The web app's screens in order against the mock server, which answers as the contract
    says and checks that every interaction was used as described."""
    pact = Pact(WEB_APP, PROVIDER).with_specification("V4")
    for expect in (
        expect_sign_up,
        expect_verify_email,
        expect_sign_in,
        expect_wrong_password,
        expect_refresh,
        expect_profile,
        expect_sessions,
        expect_sign_out,
    ):
        expect(pact)
    with pact.serve() as server:
        client = WebAppClient(str(server.url))
        assert client.register(EMAIL, PASSWORD, "Ada") == USER_ID
        assert client.verify_email("the-emailed-token") is None
        with pytest.raises(ApiError) as refused:
            client.login(EMAIL, WRONG)
        assert refused.value.problem["type"] == "/problems/invalid-credentials"
        tokens = client.login(EMAIL, PASSWORD)
        assert (tokens.access_token, tokens.expires_in) == (EXAMPLE_ACCESS, 900)
        tokens = client.refresh(tokens.refresh_token)
        me = client.me(tokens.access_token)
        assert (me["email"], me["email_verified"]) == (EMAIL, True)
        assert [s["current"] for s in client.sessions(tokens.access_token)] == [True]
        assert client.logout(tokens.access_token) is None
    pact.write_file(tmp_path)
    assert_same_contract(tmp_path, WEB_APP)
