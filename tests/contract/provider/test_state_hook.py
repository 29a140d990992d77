"""The provider-state hook (`POST /_pact/provider-states`): mounted only in tests that ask for it
(production refuses the setting: tests/security/test_production_settings.py), and each state set
up through the services so that what it hands out works against the API."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from tests.support.accounts import STRONG_PASSWORD
from tests.support.contracts import STATE_HOOK

ADA = {"email": "ada@example.com", "password": STRONG_PASSWORD}


@pytest.fixture
def hook_app(app: Flask, make_app: Callable[..., Flask]) -> Flask:
    """An app with the hook, on the migrated test database (`app`: truncated after each test)."""
    return make_app(pact_provider_states=True)


def change(app: Flask, state: str, params: dict[str, object] | None = None, **extra: object):
    return app.test_client().post(STATE_HOOK, json={"state": state, "params": params, **extra})


@pytest.mark.parametrize(
    ("env", "flag", "status"),
    [("test", True, 200), ("test", False, 404), ("development", True, 404)],
)
def test_the_hook_is_mounted_only_in_tests_with_the_setting(
    app: Flask, make_app: Callable[..., Flask], env: str, flag: bool, status: int
) -> None:
    app = make_app(env=env, pact_provider_states=flag)
    assert change(app, "no account uses the email", ADA).status_code == status


def test_a_verification_token_from_the_hook_verifies_the_sign_up(hook_app: Flask) -> None:
    answer = change(hook_app, "an unverified sign-up with a known verification token", ADA)
    assert answer.status_code == 200
    client = hook_app.test_client()
    assert client.post("/api/v1/auth/login", json=ADA).status_code == 403  # not verified yet
    verified = client.post("/api/v1/auth/verify-email", json={"token": answer.json["token"]})
    assert verified.status_code == 204
    assert client.post("/api/v1/auth/login", json=ADA).status_code == 200


def test_a_signed_in_account_gets_working_tokens(hook_app: Flask) -> None:
    values = change(hook_app, "a signed-in account", ADA).json
    client = hook_app.test_client()
    me = client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {values['access_token']}"}
    )
    assert (me.status_code, me.json["id"]) == (200, values["user_id"])
    refreshed = client.post("/api/v1/auth/refresh", json={"refresh_token": values["refresh_token"]})
    assert refreshed.status_code == 200


def test_a_state_replaces_the_account_holding_its_email(hook_app: Flask) -> None:
    first = change(hook_app, "a verified account with a known password", ADA).json["user_id"]
    second = change(hook_app, "a verified account with a known password", ADA).json["user_id"]
    assert first != second
    change(hook_app, "no account uses the email", ADA)
    assert hook_app.test_client().post("/api/v1/auth/login", json=ADA).status_code == 401


def test_unknown_and_malformed_changes_are_refused(hook_app: Flask) -> None:
    unknown = change(hook_app, "a moon made of cheese", ADA)
    assert (unknown.status_code, unknown.json["type"]) == (404, "/problems/not-found")
    missing = change(hook_app, "a verified account with a known password", {"email": "a@b.example"})
    assert (missing.status_code, missing.json["type"]) == (422, "/problems/validation-failed")
    malformed = hook_app.test_client().post(STATE_HOOK, json=["not", "an", "object"])
    assert (malformed.status_code, malformed.json["type"]) == (400, "/problems/malformed-request")


def test_teardown_changes_nothing(hook_app: Flask) -> None:
    change(hook_app, "a verified account with a known password", ADA)
    answer = change(hook_app, "no account uses the email", ADA, action="teardown")
    assert (answer.status_code, answer.json) == (200, {})
    assert hook_app.test_client().post("/api/v1/auth/login", json=ADA).status_code == 200
