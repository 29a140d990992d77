"""The provider's browser pages: `/oauth/authorize`, sign-in (password, then TOTP or a recovery
code), consent, and sign-out (`/oauth/logout`, in `webapp.oauth.logout_pages`). Thin views: read
the form, call `webapp.oauth.authorize` and the login service, render a template.

Every page gets its own Content-Security-Policy: styles from this origin only, no script, and
forms may post only here — and, because a browser applies `form-action` to the redirect that
follows a post, to the client's redirect URI. Every POST carries the CSRF token of the browser's
cookie (`webapp.oauth.browser_sessions`); a form without the right one is refused (400).

Sign-ins through these pages are counted by result (`gatehouse_oauth_signins_total`): the
login service counts them in `gatehouse_logins_total` as well, whatever the channel; this
counter tells the pages apart and adds the refusals only a page makes (a form without its CSRF
token or that does not validate, a spent rate limit).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from flask import (
    Blueprint,
    g,
    make_response,
    redirect,
    render_template,
    request,
    send_from_directory,
)
from marshmallow import ValidationError
from werkzeug.wrappers import Response as WerkzeugResponse

from observability import metrics
from webapp.auth import service as auth_service
from webapp.auth.schemas import LoginIn, LoginMfaIn
from webapp.config import current_settings
from webapp.errors import DomainError, TooManyRequests
from webapp.extensions import db, limiter
from webapp.http.origin import request_origin
from webapp.http.ratelimit import ip_key
from webapp.oauth import authorize, browser_sessions
from webapp.oauth.authorize import AuthorizationRequest, PageError, RedirectError, Step
from webapp.oauth.browser_models import OAuthBrowserSession

pages_bp = Blueprint("oauth_pages", __name__)
ASSETS = Path(__file__).resolve().parent.parent / "static" / "oauth"
SCOPE_WORDS = {
    "openid": "Confirm that you are signed in, with an identifier for your account",
    "profile": "Your name",
    "email": "Your email address, and whether it is verified",
}


def _auth_limit() -> str:
    return current_settings().ratelimit_auth


# The very budget of POST /api/v1/auth/login (same scope, same key): the sign-in pages give a
# guesser no second allowance.
auth_limit = limiter.shared_limit(_auth_limit, scope="auth", key_func=ip_key)


# --- the browser's cookie and the page's headers -------------------------------------------------


def cookie() -> str | None:
    """This browser's cookie as the response will leave it (a new one after a sign-in)."""
    value: str | None = g.get("op_cookie") or request.cookies.get(browser_sessions.COOKIE_NAME)
    return value


def _ensure_cookie() -> str:
    """A cookie to derive the CSRF token from; a browser without one gets one."""
    value = cookie()
    if value is None:
        value = g.op_cookie = browser_sessions.new_cookie()
    return value


def csp_source(uri: str) -> str:
    """A URI as a CSP source: without its query (CSP ignores it), or only the origin when the
    path holds a character that would end a source list."""
    parts = urlsplit(uri)
    origin = f"{parts.scheme}://{parts.netloc}"
    if any(c in parts.path for c in ";,'\""):
        return origin
    return origin + (parts.path or "/")


def page_csp(form_targets: Iterable[str] = ()) -> str:
    targets = " ".join(["'self'", *(csp_source(uri) for uri in form_targets)])
    return (
        "default-src 'none'; style-src 'self'; img-src 'self'; "
        f"form-action {targets}; frame-ancestors 'none'; base-uri 'none'"
    )


def finish(response: WerkzeugResponse, form_targets: Iterable[str] = ()) -> WerkzeugResponse:
    response.headers["Content-Security-Policy"] = page_csp(form_targets)
    new = g.get("op_cookie")
    if new is not None:
        response.set_cookie(
            browser_sessions.COOKIE_NAME,
            new,
            path=browser_sessions.COOKIE_PATH,
            secure=browser_sessions.cookie_secure(current_settings()),
            httponly=True,
            samesite="Lax",
        )
    return response


def page(
    template: str, status: int = 200, targets: Iterable[str] = (), **context: Any
) -> WerkzeugResponse:
    context.setdefault("csrf_token", browser_sessions.csrf_token(_ensure_cookie()))
    response = make_response(render_template(f"oauth/{template}", **context), status)
    return finish(response, targets)


def go(location: str, status: int = 302) -> WerkzeugResponse:
    return finish(redirect(location, status))


def error_page(message: str, status: int = 400) -> WerkzeugResponse:
    return page("error.html", status, message=message)


# --- the steps ---------------------------------------------------------------------------------


def login_page(
    req: AuthorizationRequest,
    *,
    email: str | None = None,
    error: str | None = None,
    status: int = 200,
    retry_after: int | None = None,
) -> WerkzeugResponse:
    response = page(
        "login.html",
        status,
        [req.redirect_uri],
        req=req,
        email=email if email is not None else (req.login_hint or ""),
        error=error,
    )
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def mfa_page(
    req: AuthorizationRequest, mfa_token: str, *, error: str | None = None, status: int = 200
) -> WerkzeugResponse:
    return page("mfa.html", status, [req.redirect_uri], req=req, mfa_token=mfa_token, error=error)


def consent_page(
    req: AuthorizationRequest, *, error: str | None = None, status: int = 200
) -> WerkzeugResponse:
    scopes = [(scope, SCOPE_WORDS.get(scope, scope)) for scope in req.scopes]
    return page("consent.html", status, [req.redirect_uri], req=req, scopes=scopes, error=error)


def proceed(
    req: AuthorizationRequest, browser: OAuthBrowserSession | None, *, fresh: bool = False
) -> WerkzeugResponse:
    """Show what the request needs next, or send the browser back to the client."""
    step = authorize.next_step(db.session, req, browser, fresh=fresh)
    if step is Step.LOGIN:
        return login_page(req)
    assert browser is not None
    if step is Step.CONSENT:
        return consent_page(req)
    location = authorize.issue(db.session, request_origin(), req, browser)
    return go(location, 302 if request.method == "GET" else 303)


def _form_request() -> AuthorizationRequest:
    return authorize.parse(db.session, parse_qs(request.form.get("request", "")))


def _refused(exc: PageError | RedirectError) -> WerkzeugResponse:
    if isinstance(exc, PageError):
        return error_page(exc.message)
    return go(exc.location, 302 if request.method == "GET" else 303)


def _csrf_failed() -> bool:
    return not browser_sessions.csrf_ok(
        request.cookies.get(browser_sessions.COOKIE_NAME), request.form.get("csrf_token")
    )


FORM_EXPIRED = "This form has expired or did not come from this page. Please try again."
ENTER_CREDENTIALS = "Enter your email address and your password."
ENTER_CODE = "Enter the 6-digit code from your authenticator app, or one recovery code."
_LOGIN_IN = LoginIn()
_LOGIN_MFA_IN = LoginMfaIn()
# The login service's refusals, as gatehouse_logins_total names them.
_SIGNIN_RESULTS = {
    "invalid-credentials": "invalid_credentials",
    "email-unverified": "unverified",
    "account-locked": "locked",
    "login-throttled": "locked",
    "invalid-mfa-token": "invalid_mfa_token",
    "invalid-mfa-code": "invalid_mfa_code",
}


def _signin_counted(result: str) -> None:
    metrics.OAUTH_SIGNINS.labels(result=result).inc()


def _signin_refused(exc: DomainError) -> None:
    _signin_counted(_SIGNIN_RESULTS.get(exc.slug, exc.slug.replace("-", "_")))


# --- the routes --------------------------------------------------------------------------------


@pages_bp.get("/oauth/authorize")
def authorize_page() -> WerkzeugResponse:
    """RFC 6749 §4.1.1 with PKCE and OpenID Connect's prompt, max_age, nonce and login_hint."""
    try:
        req = authorize.parse(db.session, request.args.to_dict(flat=False))
        browser = browser_sessions.find_live(db.session, cookie())
        return proceed(req, browser)
    except (PageError, RedirectError) as exc:
        return _refused(exc)


@pages_bp.post("/oauth/login")
@auth_limit
def login_post() -> WerkzeugResponse:
    """The password step, through the API login's own rules (lockout, throttling, audit,
    new-device email, verified email)."""
    try:
        req = _form_request()
        email = request.form.get("email", "").strip()
        if _csrf_failed():
            _signin_counted("csrf_failed")
            return login_page(req, email=email, error=FORM_EXPIRED, status=400)
        try:
            # The API login's own schema: the same limits before any hashing.
            body = _LOGIN_IN.load({"email": email, "password": request.form.get("password", "")})
        except ValidationError:
            _signin_counted("invalid_form")
            return login_page(req, email=email, error=ENTER_CREDENTIALS, status=400)
        try:
            result = auth_service.sign_in(db.session, request_origin(), **body)
        except DomainError as exc:
            _signin_refused(exc)
            return login_page(
                req,
                email=email,
                error=exc.detail,
                status=exc.status,
                retry_after=exc.retry_after if isinstance(exc, TooManyRequests) else None,
            )
        if isinstance(result, auth_service.MfaChallenge):
            _signin_counted("mfa_required")
            return mfa_page(req, result.mfa_token)
        _signin_counted("success")
        return _signed_in(req, result)
    except (PageError, RedirectError) as exc:
        return _refused(exc)


@pages_bp.post("/oauth/login/mfa")
@auth_limit
def login_mfa_post() -> WerkzeugResponse:
    """The second step: a TOTP code, or a recovery code (used up, the owner told)."""
    try:
        req = _form_request()
        mfa_token = request.form.get("mfa_token", "")
        if _csrf_failed():
            _signin_counted("csrf_failed")
            return mfa_page(req, mfa_token, error=FORM_EXPIRED, status=400)
        proof = {k: v for k in ("code", "recovery_code") if (v := request.form.get(k, "").strip())}
        try:
            body = _LOGIN_MFA_IN.load({"mfa_token": mfa_token, **proof})
        except ValidationError:
            _signin_counted("invalid_form")
            return mfa_page(req, mfa_token, error=ENTER_CODE, status=400)
        try:
            result = auth_service.sign_in_mfa(db.session, request_origin(), **body)
        except DomainError as exc:
            _signin_refused(exc)
            if exc.slug == "invalid-mfa-code":
                return mfa_page(req, mfa_token, error=exc.detail, status=exc.status)
            return login_page(req, error=exc.detail, status=exc.status)
        _signin_counted("success")
        return _signed_in(req, result)
    except (PageError, RedirectError) as exc:
        return _refused(exc)


def _signed_in(req: AuthorizationRequest, result: auth_service.SignedIn) -> WerkzeugResponse:
    """A new browser session under a new cookie, then on with the request as if it had just
    arrived — but signed in for it, so prompt=login and max_age are satisfied."""
    new_cookie, browser = browser_sessions.start(
        db.session, request_origin(), result, request.cookies.get(browser_sessions.COOKIE_NAME)
    )
    g.op_cookie = new_cookie
    return proceed(req, browser, fresh=True)


@pages_bp.post("/oauth/consent")
def consent_post() -> WerkzeugResponse:
    """Allow (remembered, a code issued) or Deny (`access_denied` to the client)."""
    try:
        req = _form_request()
        browser = browser_sessions.find_live(db.session, cookie())
        if browser is None:
            return proceed(req, None)  # the sign-in page (counted as such)
        if _csrf_failed():
            return consent_page(req, error=FORM_EXPIRED, status=400)
        if request.form.get("decision") != "allow":
            raise authorize.denied(req)
        location = authorize.issue(db.session, request_origin(), req, browser, consented=True)
        return go(location, 303)
    except (PageError, RedirectError) as exc:
        return _refused(exc)


@pages_bp.errorhandler(429)
def too_many_attempts(_exc: Exception) -> WerkzeugResponse:
    """The shared sign-in budget is spent: a page, not problem+json (Retry-After is added by the
    rate-limit layer)."""
    if request.endpoint in ("oauth_pages.login_post", "oauth_pages.login_mfa_post"):
        _signin_counted("rate_limited")
    return error_page(
        "Too many sign-in attempts from your network. Wait a minute, then try again.", 429
    )


@pages_bp.get("/oauth/assets/<path:filename>")
@limiter.exempt
def assets(filename: str) -> WerkzeugResponse:
    response = send_from_directory(ASSETS, filename, max_age=3600)
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response
