"""The provider's counters, read from a real /metrics scrape: every answer of the authorization
flow by result (`gatehouse_oauth_authorizations_total`), sign-ins through its pages
(`gatehouse_oauth_signins_total`, and `gatehouse_logins_total` beside it), and a reused refresh
token counted at the token endpoint, not among the API's refreshes."""

from __future__ import annotations

from flask.testing import FlaskClient

from tests.support.mfa import enable
from tests.support.oauth_browser import (
    LOGIN,
    authorize,
    authorize_params,
    field,
    redirect_params,
    submit_consent,
    submit_login,
    submit_mfa,
)
from tests.support.oidc import counted, refresh, tokens_for
from webapp.extensions import limiter

AUTHORIZATIONS = "gatehouse_oauth_authorizations_total"
SIGNINS = "gatehouse_oauth_signins_total"
WRONG = "wrong-Password-but-long-77"
RESULTS = (
    "code_issued",
    "login_page",
    "consent_page",
    "error_page",
    "login_required",
    "consent_required",
    "access_denied",
    "invalid_request",
    "invalid_scope",
    "unsupported_response_type",
)


def authorizations(client: FlaskClient) -> dict[str, float]:
    return {result: counted(client, AUTHORIZATIONS, result=result) for result in RESULTS}


def moved(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """The results whose count changed, by how much."""
    return {k: after[k] - before[k] for k in before if after[k] != before[k]}


def test_each_answer_of_the_authorization_flow_is_counted_once_by_result(
    client, browser, web, member
):
    before = authorizations(client)

    unknown = authorize(browser, authorize_params("no-such-client"))
    no_pkce = authorize(browser, authorize_params(web["client_id"], code_challenge=None))
    token_type = authorize(browser, authorize_params(web["client_id"], response_type="token"))
    too_wide = authorize(browser, authorize_params(web["client_id"], scope="openid admin"))
    silent = authorize(browser, authorize_params(web["client_id"], prompt="none"))

    assert unknown.status_code == 400
    assert redirect_params(no_pkce)["error"] == "invalid_request"
    assert redirect_params(token_type)["error"] == "unsupported_response_type"
    assert redirect_params(too_wide)["error"] == "invalid_scope"
    assert redirect_params(silent)["error"] == "login_required"
    assert moved(before, authorizations(client)) == {
        "error_page": 1,
        "invalid_request": 1,
        "unsupported_response_type": 1,
        "invalid_scope": 1,
        "login_required": 1,
    }

    before = authorizations(client)
    page = authorize(browser, authorize_params(web["client_id"]))
    consent = submit_login(browser, page, member.email, member.password)
    denied = redirect_params(submit_consent(browser, consent, "deny"))
    silent = redirect_params(authorize(browser, authorize_params(web["client_id"], prompt="none")))
    consent = authorize(browser, authorize_params(web["client_id"]))
    issued = redirect_params(submit_consent(browser, consent, "allow"))

    assert denied["error"] == "access_denied"
    assert silent["error"] == "consent_required"
    assert issued["code"]
    assert moved(before, authorizations(client)) == {
        "login_page": 1,
        "consent_page": 2,
        "access_denied": 1,
        "consent_required": 1,
        "code_issued": 1,
    }

    # Remembered consent: straight back to the client with a code.
    before = authorizations(client)
    assert redirect_params(authorize(browser, authorize_params(web["client_id"])))["code"]
    assert moved(before, authorizations(client)) == {"code_issued": 1}


def test_sign_ins_through_the_pages_are_counted_by_result_and_among_all_logins(
    client, browser, first_party, member
):
    results = ("success", "invalid_credentials", "invalid_form", "csrf_failed")
    before = {r: counted(client, SIGNINS, result=r) for r in results}
    logins = {r: counted(client, "gatehouse_logins_total", result=r) for r in results[:2]}
    page = authorize(browser, authorize_params(first_party["client_id"]))

    assert submit_login(browser, page, member.email, WRONG).status_code == 401
    assert submit_login(browser, page, "not-an-email", "x").status_code == 400
    form = {"request": field(page, "request"), "email": member.email, "password": WRONG}
    assert browser.post(LOGIN, data=form).status_code == 400  # no CSRF token
    assert redirect_params(submit_login(browser, page, member.email, member.password))["code"]

    after = {r: counted(client, SIGNINS, result=r) for r in results}
    assert {r: after[r] - before[r] for r in results} == dict.fromkeys(results, 1.0)
    # The login service counts them too, whatever the channel (the refused forms never reach it).
    assert counted(client, "gatehouse_logins_total", result="success") == logins["success"] + 1
    assert (
        counted(client, "gatehouse_logins_total", result="invalid_credentials")
        == logins["invalid_credentials"] + 1
    )


def test_the_code_step_is_counted(client, browser, first_party, member):
    enable(client, member)
    results = ("mfa_required", "invalid_mfa_code", "invalid_form")
    before = {r: counted(client, SIGNINS, result=r) for r in results}

    page = authorize(browser, authorize_params(first_party["client_id"]))
    step = submit_login(browser, page, member.email, member.password)
    assert submit_mfa(browser, step, code="000000").status_code == 401
    assert submit_mfa(browser, step, code="12ab56").status_code == 400

    after = {r: counted(client, SIGNINS, result=r) for r in results}
    assert {r: after[r] - before[r] for r in results} == dict.fromkeys(results, 1.0)


def test_a_spent_sign_in_budget_is_counted_as_rate_limited(make_app, first_party, member):
    limiter._storage_dead = False  # one limiter per process: trust this app's storage afresh
    limited = make_app(
        ratelimit_enabled=True, ratelimit_default="100 per minute", ratelimit_auth="1 per minute"
    )
    browser = limited.test_client()
    before = counted(browser, SIGNINS, result="rate_limited")
    page = authorize(browser, authorize_params(first_party["client_id"]))

    assert submit_login(browser, page, member.email, WRONG).status_code == 401
    assert submit_login(browser, page, member.email, member.password).status_code == 429

    assert counted(browser, SIGNINS, result="rate_limited") == before + 1


def test_a_reused_oauth_refresh_token_is_counted_at_the_token_endpoint_only(
    app, client, web, member
):
    first = tokens_for(app, client, web, member)
    assert refresh(client, web, first["refresh_token"]).status_code == 200
    api_reuse = counted(client, "gatehouse_token_refreshes_total", result="reuse_detected")
    api_success = counted(client, "gatehouse_token_refreshes_total", result="success")
    reused = counted(
        client, "gatehouse_oauth_token_grants_total", grant="refresh_token", result="refresh_reused"
    )

    assert refresh(client, web, first["refresh_token"]).status_code == 400

    assert (
        counted(
            client,
            "gatehouse_oauth_token_grants_total",
            grant="refresh_token",
            result="refresh_reused",
        )
        == reused + 1
    )
    # gatehouse_token_refreshes_total stays the API's (/api/v1/auth/refresh): the reuse alert
    # reads both counters.
    assert counted(client, "gatehouse_token_refreshes_total", result="reuse_detected") == api_reuse
    assert counted(client, "gatehouse_token_refreshes_total", result="success") == api_success
