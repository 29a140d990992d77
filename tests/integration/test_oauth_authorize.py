"""GET /oauth/authorize: the request's checks (an error page while the client or redirect URI is
in doubt, OAuth errors at the redirect URI afterwards), prompt and max_age, and the code it ends
with, redeemable through `codes.redeem_code` with the nonce, auth_time and amr of the sign-in."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from tests.support.oauth import WEB_APP, register
from tests.support.oauth_browser import (
    CALLBACK,
    ISSUER,
    authorize,
    authorize_params,
    field,
    redirect_params,
    sign_in,
    submit_consent,
    submit_login,
)
from webapp.db import utcnow
from webapp.extensions import db
from webapp.oauth import codes
from webapp.oauth.browser_models import OAuthBrowserSession
from webapp.oauth.models import OAuthAuthorizationCode, OAuthClient


def _signed_in(browser, first_party, account) -> dict[str, str]:
    """Sign `account` in through a first-party request; the parameters of the redirect."""
    return redirect_params(sign_in(browser, first_party["client_id"], account))


def test_an_unknown_client_gets_an_error_page_never_a_redirect(browser):
    response = authorize(browser, authorize_params("no-such-client"))

    assert response.status_code == 400
    assert "Location" not in response.headers
    assert response.mimetype == "text/html"
    assert "not registered (client_id)" in response.text


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://wiki.example.com/oauth/callback/",
        "https://wiki.example.com/oauth/callback?x=1",
        "https://evil.example.com/oauth/callback",
        None,
    ],
)
def test_a_redirect_uri_not_registered_exactly_is_shown_on_the_page(browser, web, redirect_uri):
    params = authorize_params(web["client_id"])
    params["redirect_uri"] = redirect_uri
    params = {k: v for k, v in params.items() if v is not None}

    response = authorize(browser, params)

    assert response.status_code == 400
    assert "Location" not in response.headers
    assert "redirect_uri" in response.text
    assert "Wiki" in response.text


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"code_challenge": None}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": "short"}, "invalid_request"),
        ({"response_type": None}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": "code id_token"}, "unsupported_response_type"),
        ({"scope": "openid offline_access"}, "invalid_scope"),
        ({"prompt": "select_account"}, "invalid_request"),
        ({"prompt": "none login"}, "invalid_request"),
        ({"max_age": "-1"}, "invalid_request"),
        ({"request": "eyJ..."}, "request_not_supported"),
    ],
)
def test_errors_after_the_redirect_uri_is_known_go_to_it_with_state_and_iss(
    browser, web, overrides, error
):
    params = authorize_params(web["client_id"], **overrides)

    answer = redirect_params(authorize(browser, params))

    assert answer["error"] == error
    assert answer["error_description"]
    assert answer["state"] == params["state"]
    assert answer["iss"] == ISSUER
    assert "code" not in answer


def test_a_parameter_given_twice_is_invalid_request(browser, web):
    params = authorize_params(web["client_id"])
    query = "&".join(f"{k}={v}" for k, v in params.items()) + "&scope=email"

    answer = redirect_params(browser.get(f"/oauth/authorize?{query}"))

    assert answer["error"] == "invalid_request"
    assert "scope" in answer["error_description"]


def test_a_scope_beyond_the_clients_registration_is_invalid_scope(client, admin, browser):
    narrow = register(client, admin, **{**WEB_APP, "scope": "openid"})

    answer = redirect_params(authorize(browser, authorize_params(narrow["client_id"])))

    assert answer["error"] == "invalid_scope"


def test_a_client_without_the_authorization_code_grant_is_unauthorized_client(app, browser, web):
    # The metadata rules keep redirect URIs to authorization_code clients: a row changed
    # behind the API's back is the only way to meet one.
    with app.app_context():
        db.session.execute(
            update(OAuthClient)
            .where(OAuthClient.id == uuid.UUID(web["id"]))
            .values(grant_types=["client_credentials"], response_types=[])
        )
        db.session.commit()
        db.session.remove()

    answer = redirect_params(authorize(browser, authorize_params(web["client_id"])))

    assert answer["error"] == "unauthorized_client"


def test_prompt_none_without_a_session_is_login_required(browser, web):
    params = authorize_params(web["client_id"], prompt="none")

    answer = redirect_params(authorize(browser, params))

    assert answer == {
        "error": "login_required",
        "error_description": answer["error_description"],
        "state": params["state"],
        "iss": ISSUER,
    }


def test_without_a_session_the_sign_in_page_is_shown_with_the_login_hint(browser, web):
    params = authorize_params(web["client_id"], login_hint="ada@example.com")

    page = authorize(browser, params)

    assert page.status_code == 200
    assert page.mimetype == "text/html"
    assert field(page, "email") == "ada@example.com"
    assert '<html lang="en">' in page.text
    assert '<label for="email">' in page.text
    assert '<label for="password">' in page.text
    assert "autofocus" in page.text
    csp = page.headers["Content-Security-Policy"]
    assert "script-src" not in csp
    assert "default-src 'none'" in csp
    assert "style-src 'self'" in csp
    assert f"form-action 'self' {CALLBACK}" in csp
    assert "frame-ancestors 'none'" in csp
    assert page.headers["Cache-Control"] == "no-store"


def test_the_code_is_redeemable_with_the_nonce_auth_time_and_amr_of_the_sign_in(
    app, browser, first_party, member
):
    params = authorize_params(first_party["client_id"], scope="openid profile")
    page = authorize(browser, params)
    answer = redirect_params(submit_login(browser, page, member.email, member.password))

    assert answer["state"] == params["state"]
    assert answer["iss"] == ISSUER
    with app.app_context():
        stored = db.session.get(OAuthClient, uuid.UUID(first_party["id"]))
        outcome = codes.redeem_code(db.session, stored, answer["code"], CALLBACK)
        db.session.commit()
        assert outcome.error is None
        code = outcome.code
        assert code.user_id == member.id
        assert code.get_nonce() == params["nonce"]
        assert code.get_scope() == "openid profile"
        assert code.code_challenge == params["code_challenge"]
        assert code.get_amr() == ["pwd"]
        browser_row = db.session.scalar(select(OAuthBrowserSession))
        assert code.auth_time == browser_row.auth_time
        assert abs((utcnow() - code.auth_time).total_seconds()) < 60
        db.session.remove()


def test_a_signed_in_browser_gets_a_code_at_once_and_prompt_none_works(
    app, browser, first_party, member
):
    _signed_in(browser, first_party, member)

    params = authorize_params(first_party["client_id"], prompt="none")
    answer = redirect_params(authorize(browser, params))

    assert answer["code"]
    assert answer["state"] == params["state"]
    with app.app_context():
        assert db.session.query(OAuthAuthorizationCode).count() == 2
        db.session.remove()


def test_prompt_none_needing_consent_is_consent_required(browser, web, first_party, member):
    _signed_in(browser, first_party, member)

    answer = redirect_params(authorize(browser, authorize_params(web["client_id"], prompt="none")))

    assert answer["error"] == "consent_required"


def test_prompt_login_asks_for_the_password_again_even_when_signed_in(
    app, browser, first_party, member
):
    _signed_in(browser, first_party, member)

    page = authorize(browser, authorize_params(first_party["client_id"], prompt="login"))

    assert page.status_code == 200
    assert 'name="password"' in page.text
    answer = redirect_params(submit_login(browser, page, member.email, member.password))
    assert answer["code"]


def test_prompt_consent_shows_the_consent_page_even_when_remembered(
    browser, web, first_party, member
):
    page = authorize(browser, authorize_params(web["client_id"]))
    consent = submit_login(browser, page, member.email, member.password)
    assert redirect_params(submit_consent(browser, consent, "allow"))["code"]

    again = authorize(browser, authorize_params(web["client_id"], prompt="consent"))

    assert again.status_code == 200
    assert 'value="allow"' in again.text


def _age_session(app, seconds: int) -> None:
    with app.app_context():
        db.session.execute(
            update(OAuthBrowserSession).values(auth_time=utcnow() - timedelta(seconds=seconds))
        )
        db.session.commit()
        db.session.remove()


def test_max_age_exceeded_asks_for_the_password_again(app, browser, first_party, member):
    _signed_in(browser, first_party, member)
    _age_session(app, 120)

    fresh_enough = authorize(browser, authorize_params(first_party["client_id"], max_age="600"))
    too_old = authorize(browser, authorize_params(first_party["client_id"], max_age="60"))
    silent = authorize(
        browser, authorize_params(first_party["client_id"], max_age="60", prompt="none")
    )

    assert redirect_params(fresh_enough)["code"]
    assert too_old.status_code == 200
    assert 'name="password"' in too_old.text
    assert redirect_params(silent)["error"] == "login_required"
    answer = redirect_params(submit_login(browser, too_old, member.email, member.password))
    assert answer["code"]
