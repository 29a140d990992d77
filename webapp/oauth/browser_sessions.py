"""The provider's own browser session: who is signed in at /oauth, for how long, and how.

The cookie holds 256 random bits; the table holds only HMAC-SHA-256(`API_KEY_PEPPER`, cookie).
A session is live while its API session (`sessions`, started by the same login service as
`POST /api/v1/auth/login`) is live, it has been used within `SESSION_IDLE_TTL` seconds, and its
absolute end (`REFRESH_TOKEN_TTL` after sign-in, the API session's `expires_at`) has not come.
Every sign-in starts a new row under a new cookie and ends the one it replaces (no fixation).

A browser without a session still gets a cookie (a random value with no row): the CSRF token of
every form is derived from the cookie (HMAC under `SECRET_KEY`), so the sign-in form is
protected before anyone is signed in, and a sign-in, which changes the cookie, changes the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import select

from webapp.auth import sessions
from webapp.auth.models import AuthSession
from webapp.auth.service import SignedIn
from webapp.config import Settings, current_settings
from webapp.context import Origin
from webapp.db import DbSession, new_id, utcnow
from webapp.oauth.browser_models import OAuthBrowserSession
from webapp.oauth.metadata import LOOPBACK_HOSTS
from webapp.users.models import User

COOKIE_NAME = "gh_op_session"
COOKIE_PATH = "/oauth"
COOKIE_BYTES = 32


def new_cookie() -> str:
    return secrets.token_urlsafe(COOKIE_BYTES)


def cookie_hash(cookie: str) -> str:
    pepper = current_settings().effective_api_key_pepper
    return hmac.new(pepper, f"oauth-browser-session:{cookie}".encode(), hashlib.sha256).hexdigest()


def csrf_token(cookie: str) -> str:
    """The token every form of the browser holding `cookie` carries."""
    key = current_settings().secret_key.encode()
    digest = hmac.new(key, f"oauth-csrf:{cookie}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def csrf_ok(cookie: str | None, presented: str | None) -> bool:
    """Whether a form's token belongs to this browser's cookie (constant-time comparison)."""
    if not cookie or not presented:
        return False
    return hmac.compare_digest(csrf_token(cookie).encode(), presented.encode())


def cookie_secure(settings: Settings) -> bool:
    """`Secure` always, but for an issuer on plain http at a loopback address outside production
    (a developer's `make run`): the browser would otherwise never send the cookie back."""
    parts = urlsplit(settings.effective_oidc_issuer)
    local = parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS
    return settings.is_production or not local


def find_live(
    db: DbSession, cookie: str | None, now: datetime | None = None
) -> OAuthBrowserSession | None:
    """The signed-in session of `cookie`, or None when there is none or it has ended (idle,
    past its absolute end, its API session revoked, its user disabled)."""
    if not cookie:
        return None
    now = now or utcnow()
    row = db.execute(
        select(OAuthBrowserSession, AuthSession, User)
        .join(AuthSession, AuthSession.id == OAuthBrowserSession.auth_session_id)
        .join(User, User.id == OAuthBrowserSession.user_id)
        .where(OAuthBrowserSession.cookie_hash == cookie_hash(cookie))
    ).one_or_none()
    if row is None:
        return None
    browser, auth_session, user = row
    idle_ttl = timedelta(seconds=current_settings().session_idle_ttl)
    if (
        browser.expires_at <= now
        or browser.last_seen_at + idle_ttl <= now
        or auth_session.revoked_at is not None
        or auth_session.expires_at <= now
        or not user.active
    ):
        return None
    return browser


def touch(db: DbSession, browser: OAuthBrowserSession) -> None:
    """The session was used: its idle deadline moves, and its API session's too (the caller
    commits)."""
    now = utcnow()
    browser.last_seen_at = now
    auth_session = db.get(AuthSession, browser.auth_session_id)
    if auth_session is not None:
        auth_session.last_used_at = now


def start(
    db: DbSession, origin: Origin, signed_in: SignedIn, previous_cookie: str | None
) -> tuple[str, OAuthBrowserSession]:
    """A new browser session for a completed sign-in, under a new cookie (returned with the
    session, live by construction); the one it replaces, if any, ends with its API session.
    Committed."""
    if previous_cookie:
        _end_previous(db, origin, previous_cookie)
    cookie = new_cookie()
    session = signed_in.session
    browser = OAuthBrowserSession(
        id=new_id(),
        cookie_hash=cookie_hash(cookie),
        user_id=signed_in.user.id,
        auth_session_id=session.id,
        auth_time=session.auth_time,
        amr=list(signed_in.amr),
        created_at=session.created_at,
        last_seen_at=session.created_at,
        expires_at=session.expires_at,
    )
    db.add(browser)
    db.commit()
    sessions.publish_pending_revocations(db)
    return cookie, browser


def _end_previous(db: DbSession, origin: Origin, cookie: str) -> None:
    previous = db.scalar(
        select(OAuthBrowserSession).where(OAuthBrowserSession.cookie_hash == cookie_hash(cookie))
    )
    if previous is None:
        return
    replaced = db.get(AuthSession, previous.auth_session_id)
    db.delete(previous)
    if replaced is not None:
        revoked = sessions.revoke_audited(
            db, origin.acting_as(previous.user_id), [replaced], "signed_in_again"
        )
        db.info.setdefault("revoked_sessions", []).extend(revoked)


def end(db: DbSession, origin: Origin, browser: OAuthBrowserSession) -> None:
    """Sign the browser out: the row goes, its API session is revoked (`auth.logout`)."""
    auth_session_id, user_id = browser.auth_session_id, browser.user_id
    db.delete(browser)
    sessions.logout(db, origin.acting_as(user_id), auth_session_id)
