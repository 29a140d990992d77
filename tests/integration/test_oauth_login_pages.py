"""The sign-in and consent pages of /oauth/authorize: the same rules as POST /api/v1/auth/login
(lockout, rate limit, unverified email, audit, new-device email, TOTP and recovery codes), CSRF
on every form, consent remembered and revocable through /api/v1/users/me/oauth-consents."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from tests.support.mfa import code_at, enable
from tests.support.oauth_browser import (
    CONSENT,
    LOGIN,
    authorize,
    authorize_params,
    cookie_value,
    field,
    redirect_params,
    start_authorization,
    submit_consent,
    submit_login,
    submit_mfa,
)
from tests.support.rows import audit_events
from webapp.extensions import db, limiter
from webapp.oauth.browser_models import OAuthBrowserSession
from webapp.oauth.models import OAuthAuthorizationCode
from webapp.outbox.models import OutboxMessage
from webapp.users.models import User

CONSENTS = "/api/v1/users/me/oauth-consents/"
WRONG = "wrong-Password-but-long-77"


def _amr(app) -> list[str]:
    with app.app_context():
        code = db.session.scalar(select(OAuthAuthorizationCode))
        db.session.remove()
    return list(code.amr)


def test_password_sign_in_then_consent_then_code_and_the_consent_is_remembered(
    app, browser, web, member
):
    params = authorize_params(web["client_id"], scope="openid profile email")
    page = authorize(browser, params)

    consent = submit_login(browser, page, member.email, member.password)

    assert consent.status_code == 200
    assert "Allow Wiki?" in consent.text
    assert "Your name" in consent.text
    assert "Your email address" in consent.text
    assert "https://wiki.example.com/oauth/callback" in consent.headers["Content-Security-Policy"]
    answer = redirect_params(submit_consent(browser, consent, "allow"))
    assert answer["state"] == params["state"]
    assert answer["code"]
    (granted,) = audit_events(app, "oauth_consent.granted")
    assert granted.actor_id == member.id
    assert granted.details["scope"] == "openid profile email"
    with app.app_context():
        auth_session_id = db.session.scalar(select(OAuthBrowserSession.auth_session_id))
        db.session.remove()
    login_event = audit_events(app, "auth.login_succeeded")[-1]  # the API's own came first
    assert login_event.actor_id == member.id
    assert login_event.target_id == auth_session_id

    again = authorize(browser, authorize_params(web["client_id"], scope="openid email"))
    assert redirect_params(again)["code"]
    narrower = authorize(browser, authorize_params(web["client_id"], scope="openid"))
    assert redirect_params(narrower)["code"]


def test_deny_sends_access_denied_with_state(browser, web, member):
    params = authorize_params(web["client_id"])
    consent = submit_login(browser, authorize(browser, params), member.email, member.password)

    answer = redirect_params(submit_consent(browser, consent, "deny"))

    assert answer["error"] == "access_denied"
    assert answer["state"] == params["state"]
    assert "code" not in answer


def test_a_first_party_client_skips_consent(app, browser, first_party, member):
    answer = redirect_params(
        submit_login(
            browser, start_authorization(browser, first_party), member.email, member.password
        )
    )

    assert answer["code"]
    assert audit_events(app, "oauth_consent.granted") == []


def test_a_wrong_password_shows_the_form_again_with_a_linked_error_and_is_audited(
    app, browser, first_party, member
):
    page = start_authorization(browser, first_party)

    again = submit_login(browser, page, member.email, WRONG)

    assert again.status_code == 401
    assert 'id="form-error"' in again.text
    assert 'aria-describedby="form-error"' in again.text
    assert field(again, "email") == member.email
    (failed,) = audit_events(app, "auth.login_failed")
    assert failed.target_id == member.id
    assert failed.details["reason"] == "invalid_credentials"


def test_failures_lock_the_sign_in_page_as_they_lock_the_api(app, browser, first_party, member):
    page = start_authorization(browser, first_party)
    for _ in range(5):  # LOCKOUT_THRESHOLD
        assert submit_login(browser, page, member.email, WRONG).status_code == 401

    locked = submit_login(browser, page, member.email, member.password)

    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) > 0
    assert audit_events(app, "auth.lockout")
    api = browser.post(
        "/api/v1/auth/login", json={"email": member.email, "password": member.password}
    )
    assert api.status_code == 429  # one lockout for both doors


def test_an_unverified_email_is_refused_as_on_the_api(app, browser, first_party, make_user):
    account = make_user(login=False)
    with app.app_context():
        db.session.execute(update(User).where(User.id == account.id).values(email_verified_at=None))
        db.session.commit()
        db.session.remove()

    refused = submit_login(
        browser, start_authorization(browser, first_party), account.email, account.password
    )

    assert refused.status_code == 403
    assert "Verify your email" in refused.text


def test_a_sign_in_from_a_new_device_emails_the_owner(app, browser, first_party, member):
    # `member` signed in through the API from the test client: same IP, other User-Agent.
    page = authorize(
        browser, authorize_params(first_party["client_id"]), headers={"User-Agent": "Firefox/1"}
    )
    form = {
        "csrf_token": field(page, "csrf_token"),
        "request": field(page, "request"),
        "email": member.email,
        "password": member.password,
    }
    redirect_params(browser.post(LOGIN, data=form, headers={"User-Agent": "Firefox/1"}))

    with app.app_context():
        sent = db.session.scalars(
            select(OutboxMessage).where(OutboxMessage.template == "new_login")
        ).all()
        db.session.remove()
    assert [m.recipient for m in sent] == [member.email]


def test_totp_sign_in_goes_through_the_code_step(app, client, browser, first_party, member):
    secret, _ = enable(client, member)
    page = start_authorization(browser, first_party)

    step = submit_login(browser, page, member.email, member.password)
    assert step.status_code == 200
    assert 'name="code"' in step.text
    assert 'name="recovery_code"' in step.text
    wrong = submit_mfa(browser, step, code="000000")
    assert wrong.status_code == 401
    assert 'id="form-error"' in wrong.text

    answer = redirect_params(submit_mfa(browser, wrong, code=code_at(secret, 1)))

    assert answer["code"]
    assert _amr(app) == ["pwd", "otp", "mfa"]
    (event,) = [e for e in audit_events(app, "auth.login_succeeded") if e.details.get("mfa")]
    assert event.details["mfa"] == "totp"


def test_a_recovery_code_signs_in_once_and_the_owner_is_told(
    app, client, browser, first_party, member
):
    _, recovery = enable(client, member)
    step = submit_login(
        browser, start_authorization(browser, first_party), member.email, member.password
    )

    answer = redirect_params(submit_mfa(browser, step, recovery_code=recovery[0]))

    assert answer["code"]
    assert _amr(app) == ["pwd", "mfa"]
    assert len(audit_events(app, "mfa.recovery_code_used")) == 1
    other = app.test_client()
    step = submit_login(
        other, start_authorization(other, first_party), member.email, member.password
    )
    assert submit_mfa(other, step, recovery_code=recovery[0]).status_code == 401


@pytest.mark.parametrize("token", [None, "forged"])
def test_a_login_post_without_the_right_csrf_token_is_400(app, browser, first_party, member, token):
    page = start_authorization(browser, first_party)
    form = {"request": field(page, "request"), "email": member.email, "password": member.password}
    if token:
        form["csrf_token"] = token

    refused = browser.post(LOGIN, data=form)

    assert refused.status_code == 400
    assert cookie_value(browser) is not None
    with app.app_context():
        assert db.session.scalar(select(OAuthBrowserSession)) is None
        db.session.remove()


def test_a_consent_post_without_the_csrf_token_is_400(app, browser, web, member):
    consent = submit_login(
        browser, start_authorization(browser, web), member.email, member.password
    )

    refused = browser.post(
        CONSENT, data={"request": field(consent, "request"), "decision": "allow"}
    )

    assert refused.status_code == 400
    assert audit_events(app, "oauth_consent.granted") == []


def test_another_browsers_csrf_token_is_refused(app, browser, first_party, member):
    mine = start_authorization(browser, first_party)
    other = app.test_client()
    start_authorization(other, first_party)

    form = {
        "csrf_token": field(mine, "csrf_token"),
        "request": field(mine, "request"),
        "email": member.email,
        "password": member.password,
    }
    assert other.post(LOGIN, data=form).status_code == 400


def test_consents_are_listed_and_revoked_by_their_owner_only(
    app, client, browser, web, member, make_user
):
    consent = submit_login(
        browser, start_authorization(browser, web), member.email, member.password
    )
    redirect_params(submit_consent(browser, consent, "allow"))

    listed = client.get(CONSENTS, headers=member.headers)
    assert listed.status_code == 200
    (item,) = listed.json["items"]
    assert item["client_id"] == web["client_id"]
    assert item["client_name"] == "Wiki"
    assert item["scope"] == "openid email"

    stranger = make_user()
    assert client.get(CONSENTS, headers=stranger.headers).json["items"] == []
    assert client.delete(f"{CONSENTS}{item['id']}", headers=stranger.headers).status_code == 404
    assert client.delete(f"{CONSENTS}{item['id']}", headers=member.headers).status_code == 204
    assert client.delete(f"{CONSENTS}{item['id']}", headers=member.headers).status_code == 404
    (revoked,) = audit_events(app, "oauth_consent.revoked")
    assert revoked.actor_id == member.id
    assert revoked.details["client_id"] == web["client_id"]

    asked_again = authorize(browser, authorize_params(web["client_id"]))
    assert asked_again.status_code == 200
    assert 'value="allow"' in asked_again.text
    silent = authorize(browser, authorize_params(web["client_id"], prompt="none"))
    assert redirect_params(silent)["error"] == "consent_required"


def test_the_sign_in_pages_share_the_api_logins_rate_limit(make_app, first_party, member):
    # The limiter is one object per process: it must trust this app's storage afresh (as in
    # tests/integration/test_rate_limits.py).
    limiter._storage_dead = False
    limited = make_app(
        ratelimit_enabled=True, ratelimit_default="100 per minute", ratelimit_auth="2 per minute"
    )
    browser = limited.test_client()
    page = start_authorization(browser, first_party)
    api = browser.post("/api/v1/auth/login", json={"email": member.email, "password": WRONG})
    assert api.status_code == 401

    assert submit_login(browser, page, member.email, WRONG).status_code == 401
    refused = submit_login(browser, page, member.email, member.password)

    assert refused.status_code == 429
    assert refused.mimetype == "text/html"
    assert int(refused.headers["Retry-After"]) > 0


def test_a_malformed_form_is_refused_before_any_password_check(
    app, client, browser, first_party, member
):
    page = start_authorization(browser, first_party)

    for email, password in (("", member.password), ("not-an-email", "x"), (member.email, "")):
        refused = submit_login(browser, page, email, password)
        assert refused.status_code == 400
        assert 'id="form-error"' in refused.text
    assert audit_events(app, "auth.login_failed") == []

    enable(client, member)
    step = submit_login(browser, page, member.email, member.password)
    assert submit_mfa(browser, step, code="12ab56").status_code == 400
    assert submit_mfa(browser, step).status_code == 400
