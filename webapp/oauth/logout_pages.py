"""`GET|POST /oauth/logout`, the provider's end_session_endpoint (OpenID Connect RP-Initiated
Logout 1.0): the client's request is checked (`webapp.oauth.end_session`), the user confirms on
a page (a form with the CSRF token: a link alone must not sign anyone out), the browser session
ends with its API session, and the browser goes to the registered `post_logout_redirect_uri`
with `state` — or, without one, sees that it is signed out."""

from __future__ import annotations

from urllib.parse import parse_qs

from flask import Blueprint, g, request
from werkzeug.wrappers import Response as WerkzeugResponse

from webapp.extensions import db
from webapp.http.origin import request_origin
from webapp.oauth import browser_sessions, end_session
from webapp.oauth.authorize import PageError
from webapp.oauth.pages import FORM_EXPIRED, cookie, error_page, go, page

logout_bp = Blueprint("oauth_logout", __name__)
FORM_FIELDS = ("csrf_token", "confirm", "request")


def _confirm_page(req: end_session.LogoutRequest, *, error: str | None = None) -> WerkzeugResponse:
    targets = [req.post_logout_redirect_uri] if req.post_logout_redirect_uri else []
    return page("logout.html", 400 if error else 200, targets, req=req, error=error)


def _signed_out(req: end_session.LogoutRequest) -> WerkzeugResponse:
    # A fresh anonymous cookie replaces the old one: nothing of the ended session stays behind.
    g.op_cookie = browser_sessions.new_cookie()
    if req.location is not None:
        return go(req.location, 303 if request.method == "POST" else 302)
    return page("logged_out.html", 200, req=req)


@logout_bp.route("/oauth/logout", methods=["GET", "POST"])
def logout() -> WerkzeugResponse:
    """The client's request (query or form) is shown for confirmation; the confirmation itself
    (`confirm` with the CSRF token) signs the browser out."""
    try:
        if request.method == "POST" and "confirm" in request.form:
            req = end_session.parse(db.session, parse_qs(request.form.get("request", "")))
            if not browser_sessions.csrf_ok(
                request.cookies.get(browser_sessions.COOKIE_NAME), request.form.get("csrf_token")
            ):
                return _confirm_page(req, error=FORM_EXPIRED)
            browser = browser_sessions.find_live(db.session, cookie())
            if browser is not None:
                browser_sessions.end(db.session, request_origin(), browser)
            return _signed_out(req)
        source = request.form if request.method == "POST" else request.args
        params = {k: v for k, v in source.to_dict(flat=False).items() if k not in FORM_FIELDS}
        req = end_session.parse(db.session, params)
        if browser_sessions.find_live(db.session, cookie()) is None:
            return _signed_out(req)  # nobody to sign out: straight on
        return _confirm_page(req)
    except PageError as exc:
        return error_page(exc.message)
