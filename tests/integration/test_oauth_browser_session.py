"""The provider's browser session: its cookie's attributes (Secure but for a local http
issuer), a new cookie and row at every sign-in, the idle end, and the end of the browser session
with its API session."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from tests.support.oauth_browser import (
    authorize,
    authorize_params,
    cookie_value,
    redirect_params,
    start_authorization,
    submit_login,
)
from webapp.auth.models import AuthSession
from webapp.db import utcnow
from webapp.extensions import db
from webapp.oauth.browser_models import OAuthBrowserSession


def test_the_cookie_is_secure_httponly_lax_on_oauth_and_rotated_at_every_sign_in(
    app, browser, first_party, member
):
    page = start_authorization(browser, first_party)
    anonymous = cookie_value(browser)
    set_cookie = page.headers["Set-Cookie"]
    for attribute in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/oauth"):
        assert attribute in set_cookie

    done = submit_login(browser, page, member.email, member.password)
    first = cookie_value(browser)
    assert "HttpOnly" in done.headers["Set-Cookie"]
    assert first not in (None, anonymous)

    again = authorize(browser, authorize_params(first_party["client_id"], prompt="login"))
    redirect_params(submit_login(browser, again, member.email, member.password))
    second = cookie_value(browser)
    assert second not in (None, first)

    with app.app_context():
        rows = db.session.scalars(select(OAuthBrowserSession)).all()
        assert len(rows) == 1  # the replaced session is gone
        assert first not in rows[0].cookie_hash
        assert second not in rows[0].cookie_hash
        replaced = db.session.scalars(
            select(AuthSession).where(AuthSession.revoked_reason == "signed_in_again")
        ).all()
        assert len(replaced) == 1
        db.session.remove()
    stale = app.test_client()
    stale.set_cookie("gh_op_session", first, path="/oauth")
    assert authorize(stale, authorize_params(first_party["client_id"])).status_code == 200


def test_an_idle_session_ends(app, browser, first_party, member):
    redirect_params(
        submit_login(
            browser, start_authorization(browser, first_party), member.email, member.password
        )
    )
    with app.app_context():
        db.session.execute(
            update(OAuthBrowserSession).values(last_seen_at=utcnow() - timedelta(hours=2))
        )
        db.session.commit()
        db.session.remove()

    answer = redirect_params(
        authorize(browser, authorize_params(first_party["client_id"], prompt="none"))
    )

    assert answer["error"] == "login_required"


def test_revoking_the_api_session_ends_the_browser_session(
    app, client, browser, first_party, member
):
    redirect_params(
        submit_login(
            browser, start_authorization(browser, first_party), member.email, member.password
        )
    )
    with app.app_context():
        session_id = db.session.scalar(select(OAuthBrowserSession.auth_session_id))
        db.session.remove()

    revoked = client.delete(f"/api/v1/auth/sessions/{session_id}", headers=member.headers)

    assert revoked.status_code == 204
    answer = redirect_params(
        authorize(browser, authorize_params(first_party["client_id"], prompt="none"))
    )
    assert answer["error"] == "login_required"


@pytest.mark.parametrize(
    ("base_url", "secure"),
    [
        ("http://localhost:8000", False),
        ("http://127.0.0.1:8000", False),
        ("http://gatehouse.internal", True),
        ("https://gatehouse.test", True),
    ],
)
def test_the_cookie_drops_secure_only_for_a_local_http_issuer(
    make_app, first_party, base_url, secure
):
    local = make_app(public_base_url=base_url)

    page = start_authorization(local.test_client(), first_party)

    assert ("Secure" in page.headers["Set-Cookie"]) is secure
