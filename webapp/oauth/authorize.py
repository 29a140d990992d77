"""The authorization request (RFC 6749 §4.1.1 with PKCE, OpenID Connect Core §3.1.2): its
checks, what the browser sees next, and the code it ends with.

Two kinds of refusal, in this order. While the client or the redirect URI is in doubt (unknown
`client_id`, a `redirect_uri` not registered exactly), nothing may be sent to that URI: the
user sees an error page (`PageError`). Once both are known good, every other error goes back
to the client at its redirect URI (`RedirectError`) with `error`, `error_description`, `state`
and `iss` (RFC 9207), as OAuth client libraries expect.

Every answer is counted by what it gave the browser (`gatehouse_oauth_authorizations_total`):
the code, the sign-in or consent page, the error sent to the client, or the error page.

The request travels through the sign-in and consent forms as its own query string, parsed and
checked again at every step: nothing the browser sends is trusted because an earlier page
showed it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from urllib.parse import urlencode

from observability import metrics
from webapp.config import current_settings
from webapp.context import Origin
from webapp.db import DbSession, utcnow
from webapp.oauth import codes, consents, service
from webapp.oauth.browser_models import OAuthBrowserSession
from webapp.oauth.browser_sessions import touch
from webapp.oauth.metadata import AUTHORIZATION_CODE, PROMPT_VALUES
from webapp.oauth.models import OAuthClient

# RFC 7636 §4.1: 43 to 128 characters of the unreserved set (a base64url SHA-256 is 43).
CODE_CHALLENGE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
MAX_NONCE = 512
MAX_STATE = 1024


class PageError(Exception):
    """A refusal shown to the user, never sent to the redirect URI (which is not trusted)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RedirectError(Exception):
    """An OAuth error for the client, delivered at its (verified) redirect URI."""

    def __init__(self, error: str, description: str, redirect_uri: str, state: str | None):
        super().__init__(description)
        self.error, self.description = error, description
        self.redirect_uri, self.state = redirect_uri, state

    @property
    def location(self) -> str:
        return with_params(
            self.redirect_uri,
            error=self.error,
            error_description=self.description,
            state=self.state,
            iss=current_settings().effective_oidc_issuer,
        )


def with_params(uri: str, **params: str | None) -> str:
    """`uri` with `params` (the None ones left out) added to the query it may already have."""
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"{uri}{'&' if '?' in uri else '?'}{query}"


@dataclass(frozen=True)
class AuthorizationRequest:
    client: OAuthClient
    redirect_uri: str
    scopes: list[str]
    state: str | None
    nonce: str | None
    code_challenge: str
    prompt: frozenset[str]
    max_age: int | None
    login_hint: str | None
    query: str  # the request as received, carried by the forms

    @property
    def scope(self) -> str:
        return " ".join(self.scopes)

    def error(self, error: str, description: str) -> RedirectError:
        return RedirectError(error, description, self.redirect_uri, self.state)


def _single(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = params.get(name) or []
    if len(values) > 1:
        raise ValueError(name)
    return values[0] if values else None


def _counted(result: str) -> None:
    metrics.OAUTH_AUTHORIZATIONS.labels(result=result).inc()


def parse(db: DbSession, params: Mapping[str, Sequence[str]]) -> AuthorizationRequest:
    """The checked request, or `PageError` / `RedirectError` (counted: the refusal is this
    answer). `params` maps each name to every value it was given (RFC 6749 §3.1: a parameter
    given twice is an error)."""
    try:
        return _parse(db, params)
    except PageError:
        _counted("error_page")
        raise
    except RedirectError as refused:
        _counted(refused.error)
        raise


def _parse(db: DbSession, params: Mapping[str, Sequence[str]]) -> AuthorizationRequest:
    try:
        client_id = _single(params, "client_id")
        redirect_uri = _single(params, "redirect_uri")
    except ValueError as twice:
        raise PageError(f"The request gives {twice} more than once.") from None
    client = service.find_by_client_id(db, client_id) if client_id else None
    if client is None:
        raise PageError("The application that sent you here is not registered (client_id).")
    if not redirect_uri or not client.check_redirect_uri(redirect_uri):
        raise PageError(
            f"The address {client.client_name} asked to return you to is not one it registered "
            "(redirect_uri), so you were not sent back there."
        )
    given_state = params.get("state") or []
    state = given_state[0] if given_state else None

    def refuse(error: str, description: str) -> RedirectError:
        return RedirectError(error, description, redirect_uri, state)

    try:
        values = {
            name: _single(params, name)
            for name in (
                "response_type",
                "scope",
                "state",
                "nonce",
                "code_challenge",
                "code_challenge_method",
                "prompt",
                "max_age",
                "login_hint",
                "request",
                "request_uri",
            )
        }
    except ValueError as twice:
        raise refuse("invalid_request", f"{twice} is given more than once.") from None
    if values["request"] is not None:
        raise refuse("request_not_supported", "Request objects are not supported.")
    if values["request_uri"] is not None:
        raise refuse("request_uri_not_supported", "request_uri is not supported.")
    response_type = values["response_type"]
    if not response_type:
        raise refuse("invalid_request", "response_type is required.")
    if response_type != "code":
        raise refuse("unsupported_response_type", "Only response_type=code is supported.")
    if AUTHORIZATION_CODE not in client.grant_types or not client.check_response_type("code"):
        raise refuse("unauthorized_client", "The client is not registered for authorization_code.")
    if state is not None and len(state) > MAX_STATE:
        raise refuse("invalid_request", f"state is longer than {MAX_STATE} characters.")
    challenge = values["code_challenge"]
    if not challenge:
        raise refuse("invalid_request", "code_challenge is required (PKCE, method S256).")
    if values["code_challenge_method"] != codes.S256:
        raise refuse("invalid_request", "code_challenge_method must be S256.")
    if not CODE_CHALLENGE.match(challenge):
        raise refuse("invalid_request", "code_challenge is not a valid S256 challenge.")
    nonce = values["nonce"]
    if nonce is not None and len(nonce) > MAX_NONCE:
        raise refuse("invalid_request", f"nonce is longer than {MAX_NONCE} characters.")
    requested = (values["scope"] or "").split()
    scopes = list(dict.fromkeys(requested)) if requested else client.scopes
    if not set(scopes) <= set(client.scopes):
        raise refuse("invalid_scope", "The scope exceeds the client's registered scope.")
    prompt = frozenset((values["prompt"] or "").split())
    if not prompt <= set(PROMPT_VALUES):
        raise refuse("invalid_request", f"prompt values supported: {' '.join(PROMPT_VALUES)}.")
    if "none" in prompt and len(prompt) > 1:
        raise refuse("invalid_request", "prompt=none cannot be combined with other values.")
    max_age = values["max_age"]
    if max_age is not None and not (max_age.isascii() and max_age.isdigit()):
        raise refuse("invalid_request", "max_age must be a whole number of seconds.")
    query = urlencode([(name, value) for name, given in params.items() for value in given])
    return AuthorizationRequest(
        client=client,
        redirect_uri=redirect_uri,
        scopes=scopes,
        state=state,
        nonce=nonce,
        code_challenge=challenge,
        prompt=prompt,
        max_age=int(max_age) if max_age is not None else None,
        login_hint=values["login_hint"],
        query=query,
    )


class Step(Enum):
    LOGIN = "login"
    CONSENT = "consent"
    DONE = "done"


def needs_login(
    request: AuthorizationRequest, browser: OAuthBrowserSession | None, *, fresh: bool
) -> bool:
    """No session; or the client asks for a new sign-in (`prompt=login`) or one newer than
    `max_age` seconds — unless the user has just signed in for this very request (`fresh`)."""
    if browser is None:
        return True
    if fresh:
        return False
    if "login" in request.prompt:
        return True
    if request.max_age is not None:
        return utcnow() - browser.auth_time > timedelta(seconds=request.max_age)
    return False


def needs_consent(
    db: DbSession, request: AuthorizationRequest, browser: OAuthBrowserSession
) -> bool:
    """`prompt=consent` always asks; otherwise a first-party client never does, and another only
    for a scope the user has not allowed it yet."""
    if "consent" in request.prompt:
        return True
    if request.client.first_party:
        return False
    return not consents.covers(db, browser.user_id, request.client, request.scopes)


def next_step(
    db: DbSession,
    request: AuthorizationRequest,
    browser: OAuthBrowserSession | None,
    *,
    fresh: bool = False,
) -> Step:
    """What the browser sees next; `prompt=none` turns a page into an error for the client.
    A page or an error is counted here; `DONE` is counted by `issue`."""
    if needs_login(request, browser, fresh=fresh):
        if "none" in request.prompt:
            _counted("login_required")
            raise request.error("login_required", "The user is not signed in.")
        _counted("login_page")
        return Step.LOGIN
    assert browser is not None
    if needs_consent(db, request, browser):
        if "none" in request.prompt:
            _counted("consent_required")
            raise request.error("consent_required", "The user has not consented yet.")
        _counted("consent_page")
        return Step.CONSENT
    return Step.DONE


def issue(
    db: DbSession,
    origin: Origin,
    request: AuthorizationRequest,
    browser: OAuthBrowserSession,
    *,
    consented: bool = False,
) -> str:
    """The code for this request (with the consent just given, if `consented`), committed;
    returns where the browser goes: the redirect URI with `code`, `state` and `iss`."""
    if consented:
        consents.grant(db, origin, browser.user_id, request.client, request.scopes)
    plain = codes.issue_code(
        db,
        request.client,
        user_id=browser.user_id,
        redirect_uri=request.redirect_uri,
        scope=request.scope,
        code_challenge=request.code_challenge,
        nonce=request.nonce,
        auth_time=browser.auth_time,
        amr=list(browser.amr),
    )
    touch(db, browser)
    db.commit()
    _counted("code_issued")
    return with_params(
        request.redirect_uri,
        code=plain,
        state=request.state,
        iss=current_settings().effective_oidc_issuer,
    )


def denied(request: AuthorizationRequest) -> RedirectError:
    """The user pressed Deny (counted)."""
    _counted("access_denied")
    return request.error("access_denied", "The user denied the request.")
