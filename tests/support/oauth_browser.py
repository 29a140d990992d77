"""The provider's browser side in the tests: the registered clients a browser signs in to and
the browser itself (fixtures), PKCE pairs, authorization requests, reading the pages' forms,
and signing in and out through them."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.support.accounts import Account
from tests.support.oauth import WEB_APP, register
from webapp.oauth.browser_sessions import COOKIE_NAME

AUTHORIZE = "/oauth/authorize"
LOGIN = "/oauth/login"
LOGIN_MFA = "/oauth/login/mfa"
CONSENT = "/oauth/consent"
LOGOUT = "/oauth/logout"
CALLBACK = WEB_APP["redirect_uris"][0]
ISSUER = "https://gatehouse.test"


@pytest.fixture
def web(client: FlaskClient, admin: Account) -> dict[str, Any]:
    """A registered third-party web client: its users are asked for consent."""
    return register(client, admin, **WEB_APP)


@pytest.fixture
def first_party(client: FlaskClient, admin: Account) -> dict[str, Any]:
    """A registered first-party client ("Portal"): signed in to without a consent page."""
    return register(client, admin, **{**WEB_APP, "client_name": "Portal", "first_party": True})


@pytest.fixture
def browser(app: Flask) -> FlaskClient:
    """A browser of its own (its own cookie jar) on the `app` fixture."""
    return app.test_client()


def pkce() -> tuple[str, str]:
    """(verifier, S256 challenge)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode().rstrip("=")


def authorize_params(client_id: str, **overrides: Any) -> dict[str, Any]:
    """A valid request for `client_id`; an override of None leaves the parameter out."""
    _, challenge = pkce()
    params: dict[str, Any] = {
        "client_id": client_id,
        "redirect_uri": CALLBACK,
        "response_type": "code",
        "scope": "openid email",
        "state": "st-" + secrets.token_hex(4),
        "nonce": "n-" + secrets.token_hex(4),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def authorize(browser: FlaskClient, params: dict[str, Any], **kwargs: Any) -> TestResponse:
    return browser.get(f"{AUTHORIZE}?{urlencode(params)}", **kwargs)


def start_authorization(
    browser: FlaskClient, client_body: dict[str, Any], **params: Any
) -> TestResponse:
    """A valid authorization request for the registered client `client_body`; the page it
    answers with (sign-in or consent), asserted to be one."""
    page = authorize(browser, authorize_params(client_body["client_id"], **params))
    assert page.status_code == 200, page.text[:300]
    return page


def redirect_params(response: TestResponse) -> dict[str, str]:
    """The query of a redirect to the client, one value per name."""
    assert response.status_code in (302, 303), (response.status_code, response.text[:500])
    location = response.headers["Location"]
    assert location.startswith(CALLBACK), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def field(response: TestResponse, name: str) -> str:
    """The value of the (first) hidden or prefilled input called `name` in a page."""
    match = re.search(rf'name="{re.escape(name)}"[^>]*?value="([^"]*)"', response.text)
    assert match, f"no field {name} in {response.text[:2000]}"
    return html.unescape(match.group(1))


def cookie_value(browser: FlaskClient) -> str | None:
    found = browser.get_cookie(COOKIE_NAME, path="/oauth")
    return found.value if found is not None else None


def submit_login(
    browser: FlaskClient, page: TestResponse, email: str, password: str, **extra: Any
) -> TestResponse:
    form = {
        "csrf_token": field(page, "csrf_token"),
        "request": field(page, "request"),
        "email": email,
        "password": password,
        **extra,
    }
    return browser.post(LOGIN, data=form)


def submit_mfa(browser: FlaskClient, page: TestResponse, **codes: str) -> TestResponse:
    form = {
        "csrf_token": field(page, "csrf_token"),
        "request": field(page, "request"),
        "mfa_token": field(page, "mfa_token"),
        **codes,
    }
    return browser.post(LOGIN_MFA, data=form)


def submit_consent(browser: FlaskClient, page: TestResponse, decision: str) -> TestResponse:
    form = {
        "csrf_token": field(page, "csrf_token"),
        "request": field(page, "request"),
        "decision": decision,
    }
    return browser.post(CONSENT, data=form)


def submit_logout(browser: FlaskClient, page: TestResponse) -> TestResponse:
    """Confirm the sign-out that the logout `page` asks about."""
    form = {
        "csrf_token": field(page, "csrf_token"),
        "request": field(page, "request"),
        "confirm": "yes",
    }
    return browser.post(LOGOUT, data=form)


def sign_in(browser: FlaskClient, client_id: str, account: Account, **params: Any) -> TestResponse:
    """Start an authorization request and sign in with the password; the answer after it."""
    page = authorize(browser, authorize_params(client_id, **params))
    assert page.status_code == 200, page.text[:500]
    return submit_login(browser, page, account.email, account.password)
