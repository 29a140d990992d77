"""GET|POST /oauth/logout (RP-initiated logout): the ID token hint verified with the JWKS (an
expired one accepted), the post-logout redirect URI registered exactly or shown on a page,
a confirmation with the CSRF token, and the end of the browser session with its API session."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from tests.support.oauth import WEB_APP, register
from tests.support.oauth_browser import (
    ISSUER,
    LOGOUT,
    authorize,
    authorize_params,
    field,
    redirect_params,
    sign_in,
    submit_logout,
)
from tests.support.rows import audit_events
from webapp.auth.models import AuthSession
from webapp.auth.tokens import keyring
from webapp.extensions import db
from webapp.oauth.browser_models import OAuthBrowserSession

AFTER = WEB_APP["post_logout_redirect_uris"][0]


def id_token(app, client_id: str, user_id: uuid.UUID, *, key: Any = None, **claims: Any) -> str:
    """An ID token as the provider signs them, expired an hour ago."""
    now = int(time.time())
    body = {"iss": ISSUER, "aud": client_id, "sub": str(user_id), "iat": now - 7200}
    body |= {"exp": now - 3600, **claims}
    with app.app_context():
        signing = keyring().signing_key
        return pyjwt.encode(
            body,
            key or signing.private_key,
            algorithm="RS256" if key is not None else signing.alg,
            headers={"kid": signing.kid},
        )


def _signed_in(browser, first_party, account) -> None:
    redirect_params(sign_in(browser, first_party["client_id"], account))


def _browser_sessions(app) -> list[OAuthBrowserSession]:
    with app.app_context():
        rows = list(db.session.scalars(select(OAuthBrowserSession)))
        db.session.remove()
    return rows


def test_logout_with_a_hint_confirms_then_ends_both_sessions_and_returns_with_state(
    app, browser, first_party, member
):
    _signed_in(browser, first_party, member)
    (row,) = _browser_sessions(app)
    hint = id_token(app, first_party["client_id"], member.id)

    page = browser.get(
        LOGOUT,
        query_string={"id_token_hint": hint, "post_logout_redirect_uri": AFTER, "state": "s1"},
    )

    assert page.status_code == 200
    assert "Portal" in page.text
    assert 'name="confirm"' in page.text
    assert f"form-action 'self' {AFTER}" in page.headers["Content-Security-Policy"]
    assert _browser_sessions(app)  # not yet: a link alone signs nobody out
    done = submit_logout(browser, page)
    assert done.status_code == 303
    assert done.headers["Location"] == f"{AFTER}?state=s1"
    assert _browser_sessions(app) == []
    with app.app_context():
        assert db.session.get(AuthSession, row.auth_session_id).revoked_reason == "logout"
        db.session.remove()
    assert [e.target_id for e in audit_events(app, "auth.logout")] == [row.auth_session_id]
    silent = authorize(browser, authorize_params(first_party["client_id"], prompt="none"))
    assert redirect_params(silent)["error"] == "login_required"


def test_client_id_alone_names_the_client_for_the_return_address(app, browser, first_party, member):
    _signed_in(browser, first_party, member)

    page = browser.get(
        LOGOUT,
        query_string={"client_id": first_party["client_id"], "post_logout_redirect_uri": AFTER},
    )

    assert page.status_code == 200
    assert 'name="confirm"' in page.text


def test_a_post_from_the_client_is_shown_for_confirmation_too(app, browser, first_party, member):
    _signed_in(browser, first_party, member)

    page = browser.post(
        LOGOUT, data={"client_id": first_party["client_id"], "post_logout_redirect_uri": AFTER}
    )

    assert page.status_code == 200
    assert 'name="confirm"' in page.text
    assert _browser_sessions(app)


@pytest.mark.parametrize(
    "params",
    [
        {"post_logout_redirect_uri": "https://evil.example.com/"},
        {"post_logout_redirect_uri": AFTER + "x"},
        {"post_logout_redirect_uri": AFTER, "client_id": None},
        {"post_logout_redirect_uri": AFTER, "client_id": "no-such-client"},
    ],
)
def test_a_return_address_not_registered_for_the_client_is_shown_never_followed(
    browser, first_party, params
):
    query = {"client_id": first_party["client_id"], **params}
    query = {k: v for k, v in query.items() if v is not None}

    page = browser.get(LOGOUT, query_string=query)

    assert page.status_code == 400
    assert "Location" not in page.headers
    assert "not sent there" in page.text or "not registered" in page.text


def test_a_hint_signed_by_another_key_or_for_another_client_is_refused(
    app, client, admin, browser, first_party, member
):
    other = register(client, admin, **WEB_APP)
    stranger_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = id_token(app, first_party["client_id"], member.id, key=stranger_key)
    elsewhere = id_token(app, other["client_id"], member.id)

    for query in (
        {"id_token_hint": forged, "post_logout_redirect_uri": AFTER},
        {"id_token_hint": elsewhere, "client_id": first_party["client_id"]},
        {"id_token_hint": member.access_token},  # Gatehouse's own access token is no ID token
        {"id_token_hint": "not-a-jwt"},
    ):
        page = browser.get(LOGOUT, query_string=query)
        assert page.status_code == 400, query
        assert "Location" not in page.headers


def test_a_confirmation_without_the_csrf_token_signs_nobody_out(app, browser, first_party, member):
    _signed_in(browser, first_party, member)
    page = browser.get(LOGOUT, query_string={"client_id": first_party["client_id"]})

    refused = browser.post(LOGOUT, data={"request": field(page, "request"), "confirm": "yes"})

    assert refused.status_code == 400
    assert _browser_sessions(app)
    assert audit_events(app, "auth.logout") == []


def test_without_a_session_the_browser_goes_straight_back(browser, first_party):
    answer = browser.get(
        LOGOUT,
        query_string={
            "client_id": first_party["client_id"],
            "post_logout_redirect_uri": AFTER,
            "state": "x y",
        },
    )

    assert answer.status_code == 302
    assert answer.headers["Location"] == f"{AFTER}?state=x+y"


def test_without_a_return_address_the_signed_out_page_is_shown(app, browser, first_party, member):
    _signed_in(browser, first_party, member)
    page = browser.get(LOGOUT)

    done = submit_logout(browser, page)

    assert done.status_code == 200
    assert "You are signed out" in done.text
    assert _browser_sessions(app) == []
