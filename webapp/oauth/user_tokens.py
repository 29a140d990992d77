"""The rules of the `authorization_code` and `refresh_token` grants: what a code or refresh token
buys, and what a second presentation of either costs.

A redeemed code starts a session (`webapp.auth.models.AuthSession`) that belongs to the client
and keeps the scope, `auth_time` and `amr` of the authorization. Its access tokens name the
session (`sid`); its refresh tokens, issued only to a client registered for `refresh_token`,
rotate through the API's own machinery (`webapp.auth.rotation`), so a reused refresh token
revokes the session exactly as the API's does, and a code presented a second time revokes the
session its first redemption started (RFC 6749 §4.1.2). Every refusal is OAuth's `invalid_grant`
(or `invalid_scope`), raised as Authlib's errors for the token endpoint to answer.

Nothing here reads the HTTP request: the grants (`webapp.oauth.grants`) pass the values in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import timedelta
from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidScopeError

from webapp.audit import service as audit
from webapp.auth import rotation, sessions, state
from webapp.auth.models import AuthSession, RefreshToken
from webapp.auth.tokens import format_refresh_token
from webapp.config import current_settings
from webapp.context import Origin
from webapp.db import DbSession, new_id, utcnow
from webapp.oauth import codes, tokens
from webapp.oauth.metadata import REFRESH_TOKEN
from webapp.oauth.models import OAuthAuthorizationCode, OAuthClient
from webapp.users.models import User

OPENID = "openid"
# RFC 7636 §4.1: 43 to 128 unreserved characters.
VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
CODE_REFUSALS = {
    "unknown": "The authorization code is invalid.",
    "expired": "The authorization code has expired.",
    "wrong_client": "The authorization code was issued to another client.",
    "wrong_redirect_uri": "The redirect_uri does not match the authorization request.",
}


class CodeReused(InvalidGrantError):  # type: ignore[misc]
    """`invalid_grant` for a code presented again; what its first redemption issued is revoked
    (`result` is the metric's label)."""

    result = "code_reused"


class RefreshReused(InvalidGrantError):  # type: ignore[misc]
    """`invalid_grant` for a refresh token used again: its session is revoked."""

    result = "refresh_reused"


def pkce_matches(challenge: str, verifier: str | None) -> bool:
    """RFC 7636 §4.6 with S256, the only method a code can carry; constant time."""
    if verifier is None or not VERIFIER.fullmatch(verifier):
        return False
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    computed = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    return hmac.compare_digest(computed, challenge)


def _revoke_first_redemption(
    db: DbSession, origin: Origin, client: OAuthClient, code: OAuthAuthorizationCode
) -> None:
    """A code seen twice: whoever holds it is not (only) the client. End the session its first
    redemption started, if it did start one; audited, committed."""
    session = db.get(AuthSession, code.session_id) if code.session_id is not None else None
    revoked = sessions.revoke(db, [session], "authorization_code_reuse") if session else []
    audit.record(
        db,
        origin.acting_as(code.user_id),
        "oauth.code_reused",
        target_type="session" if session else None,
        target_id=session.id if session else None,
        presented_by=client.client_id,
        code_id=str(code.id),
    )
    db.commit()
    state.publish_sessions_revoked(revoked)


def _response(
    client: OAuthClient,
    user: User,
    session: AuthSession,
    scope: str,
    refresh_id: Any,
    nonce: str | None,
) -> dict[str, Any]:
    access, ttl = tokens.user_access_token(client, user.id, session.id, scope)
    body: dict[str, Any] = {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ttl,
        "scope": scope,
    }
    if refresh_id is not None:
        body["refresh_token"] = format_refresh_token(refresh_id)
    if OPENID in scope.split():
        body["id_token"] = tokens.id_token(
            client,
            user.id,
            access_token=access,
            auth_time=int(session.auth_time.timestamp()),
            amr=list(session.amr or []),
            nonce=nonce,
        )
    return body


def redeem(
    db: DbSession,
    origin: Origin,
    client: OAuthClient,
    *,
    code: str,
    redirect_uri: str | None,
    code_verifier: str | None,
) -> dict[str, Any]:
    """The token response for an authorization code (RFC 6749 §4.1.3, RFC 7636 §4.5), committed
    with the session it starts and an `oauth.token_issued` event. The code is spent whatever
    the outcome."""
    redemption = codes.redeem_code(db, client, code, redirect_uri)
    if redemption.error == "reused":
        assert redemption.code is not None
        _revoke_first_redemption(db, origin, client, redemption.code)
        raise CodeReused("The authorization code was already used; its tokens are revoked.")
    row = redemption.code
    if row is None:
        db.commit()  # the code is burnt
        raise InvalidGrantError(CODE_REFUSALS.get(redemption.error or "", "Invalid code."))
    if not pkce_matches(row.code_challenge, code_verifier):
        db.commit()
        raise InvalidGrantError("The code_verifier is missing or does not match (PKCE).")
    user = db.get(User, row.user_id)
    if user is None or not user.active:
        db.commit()
        raise InvalidGrantError("The user of this code can no longer sign in.")

    settings = current_settings()
    now = utcnow()
    session = AuthSession(
        id=new_id(),
        user_id=user.id,
        client_pk=client.id,
        scope=row.scope,
        amr=list(row.amr),
        created_at=now,
        last_used_at=now,
        auth_time=row.auth_time,
        expires_at=now + timedelta(seconds=settings.refresh_token_ttl),
        ip=origin.ip,
        user_agent=sessions.stored_user_agent(origin),
        remember_me=False,
    )
    db.add(session)
    row.session_id = session.id
    refresh_id = None
    if client.check_grant_type(REFRESH_TOKEN):
        refresh_id = new_id()
        db.add(RefreshToken(id=refresh_id, session_id=session.id, created_at=now))
    audit.record(
        db,
        origin.acting_as(user.id),
        "oauth.token_issued",
        target_type="session",
        target_id=session.id,
        grant="authorization_code",
        client_id=client.client_id,
        scope=row.scope,
        refresh_token=refresh_id is not None,
    )
    db.commit()
    return _response(client, user, session, row.scope, refresh_id, row.nonce)


def refresh(
    db: DbSession, origin: Origin, client: OAuthClient, *, refresh_token: str, scope: str | None
) -> dict[str, Any]:
    """The token response for a refresh token of `client` (RFC 6749 §6): a new access token,
    the next refresh token and, with `openid`, a new ID token without `nonce`. `scope` may only
    narrow the session's; the session keeps its own for the next refresh."""
    requested: list[str] = []

    def within_grant(session: AuthSession) -> None:
        granted = (session.scope or "").split()
        requested[:] = scope.split() if scope else granted
        if not set(requested) <= set(granted):
            raise InvalidScopeError("The scope exceeds what the user granted.")

    try:
        rotated = rotation.rotate(
            db, origin, refresh_token, client_pk=client.id, check=within_grant
        )
    except rotation.RefreshRefused as refused:
        if refused.result == rotation.REUSE_DETECTED:
            raise RefreshReused(
                "The refresh token was already used; its session is revoked."
            ) from None
        raise InvalidGrantError("The refresh token is invalid, expired or revoked.") from None
    narrowed = " ".join(s for s in dict.fromkeys(requested))
    return _response(client, rotated.user, rotated.session, narrowed, rotated.refresh_id, None)
