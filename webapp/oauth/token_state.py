"""What the provider knows of a token a client presents: introspection (RFC 7662), revocation
(RFC 7009) and UserInfo (OpenID Connect Core §5.3).

A token is the provider's when it is one of its access tokens (`webapp.oauth.tokens`) or a
refresh token of a session that belongs to an OAuth client; the API's own tokens are not.
A client may only introspect or revoke its own tokens: anyone else's are "not active" and
their revocation does nothing, so neither answer tells a client whether another's token exists.
A user's token is as alive as its session (revoked, expired, the user deactivated or deleted:
not active); a `client_credentials` access token is stored nowhere and lives until it expires.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc6749.errors import OAuth2Error

from webapp.audit import service as audit
from webapp.auth import sessions, state
from webapp.auth.models import AuthSession, RefreshToken
from webapp.auth.tokens import parse_refresh_token
from webapp.config import current_settings
from webapp.context import Origin
from webapp.db import DbSession, utcnow
from webapp.oauth.models import OAuthClient
from webapp.oauth.tokens import AccessClaims, verify_access_token
from webapp.users.models import User

ACCESS, REFRESH = "access_token", "refresh_token"


class UnrevocableToken(OAuth2Error):  # type: ignore[misc]
    """RFC 7009 §2.2.1 `unsupported_token_type`, as a 400 (Authlib's class of that name is a
    401 challenge, meant for resource servers)."""

    error = "unsupported_token_type"
    status_code = 400


@dataclass(frozen=True)
class Presented:
    kind: str  # ACCESS or REFRESH
    client_id: str
    access: AccessClaims | None = None
    refresh: RefreshToken | None = None
    session: AuthSession | None = None


def _as_access(db: DbSession, token: str) -> Presented | None:
    claims = verify_access_token(token)
    if claims is None:
        return None
    session = db.get(AuthSession, claims.session_id) if claims.session_id else None
    # A session gone (its user or client deleted) is None: the token went with it.
    return Presented(ACCESS, claims.client_id, access=claims, session=session)


def _as_refresh(db: DbSession, token: str) -> Presented | None:
    token_id = parse_refresh_token(token)
    row = db.get(RefreshToken, token_id) if token_id is not None else None
    session = db.get(AuthSession, row.session_id) if row is not None else None
    if row is None or session is None or session.client_pk is None:
        return None  # unknown, or a refresh token of the API's own sessions
    client = db.get(OAuthClient, session.client_pk)
    if client is None:
        return None
    return Presented(REFRESH, client.client_id, refresh=row, session=session)


def find(db: DbSession, token: str, hint: str | None) -> Presented | None:
    """The token, tried as the hinted type first (RFC 7009 §2.1: a hint only saves a lookup)."""
    readers = (_as_refresh, _as_access) if hint == REFRESH else (_as_access, _as_refresh)
    for read in readers:
        found = read(db, token)
        if found is not None:
            return found
    return None


def _user_session_live(db: DbSession, session: AuthSession) -> bool:
    if not session.active:
        return False
    user = db.get(User, session.user_id)
    return user is not None and user.active


def is_active(db: DbSession, presented: Presented) -> bool:
    if presented.kind == ACCESS:
        assert presented.access is not None
        if presented.access.session_id is None:
            return True  # client_credentials: verified and unexpired is all there is
        return presented.session is not None and _user_session_live(db, presented.session)
    assert presented.refresh is not None
    assert presented.session is not None
    return (
        presented.refresh.used_at is None
        and not sessions.is_idle(presented.session, utcnow())
        and _user_session_live(db, presented.session)
    )


def introspect(db: DbSession, client: OAuthClient, token: str, hint: str | None) -> dict[str, Any]:
    """RFC 7662 §2.2: `{"active": false}` for anything not an active token of `client`."""
    presented = find(db, token, hint)
    if presented is None or presented.client_id != client.client_id:
        return {"active": False}
    if not is_active(db, presented):
        return {"active": False}
    if presented.access is not None:
        claims = presented.access.claims
        body = {key: claims[key] for key in ("scope", "client_id", "sub", "exp", "iat", "iss")}
        body.update(aud=claims["aud"], jti=claims["jti"], token_type="Bearer")  # noqa: S106
        return {"active": True, **body}
    session, row = presented.session, presented.refresh
    assert session is not None
    assert row is not None
    return {
        "active": True,
        "token_type": REFRESH,
        "client_id": presented.client_id,
        "scope": session.scope or "",
        "sub": str(session.user_id),
        "iat": int(row.created_at.timestamp()),
        "exp": int(sessions.idle_deadline(session).timestamp()),
        "iss": current_settings().effective_oidc_issuer,
    }


def revoke(
    db: DbSession, origin: Origin, client: OAuthClient, token: str, hint: str | None
) -> None:
    """RFC 7009 §2.1: a user's access or refresh token of `client` ends its whole session (the
    refresh-token family and every access token issued from it); audited, committed. Anything
    else is a no-op, but a `client_credentials` access token, which nothing can revoke
    (`unsupported_token_type`: it is stored nowhere and expires after ACCESS_TOKEN_TTL)."""
    presented = find(db, token, hint)
    if presented is None or presented.client_id != client.client_id:
        return
    if presented.kind == ACCESS and presented.access and presented.access.session_id is None:
        raise UnrevocableToken("A client_credentials access token cannot be revoked; it expires.")
    session = presented.session
    if session is None or session.revoked_at is not None:
        return
    revoked = sessions.revoke(db, [session], "oauth_revocation")
    audit.record(
        db,
        origin.acting_as(session.user_id),
        "oauth.token_revoked",
        target_type="session",
        target_id=session.id,
        client_id=client.client_id,
        token_type=presented.kind,
    )
    db.commit()
    state.publish_sessions_revoked(revoked)


class InvalidAccessToken(Exception):
    """UserInfo's 401 (`invalid_token`): no live user's access token of the provider."""


class InsufficientScope(Exception):
    """UserInfo's 403 (`insufficient_scope`): the token was not granted `openid`."""


def userinfo(db: DbSession, token: str) -> dict[str, Any]:
    """OIDC Core §5.3: `sub`, with `name` and `updated_at` for `profile`, `email` and
    `email_verified` for `email`, as the user is now."""
    claims = verify_access_token(token)
    if claims is None or claims.session_id is None:
        raise InvalidAccessToken("The access token is invalid or expired.")
    session = db.get(AuthSession, claims.session_id)
    if session is None or not _user_session_live(db, session):
        raise InvalidAccessToken("The access token has been revoked.")
    if "openid" not in claims.scopes:
        raise InsufficientScope("The access token was not granted the openid scope.")
    user = db.get(User, session.user_id)
    assert user is not None
    body: dict[str, Any] = {"sub": str(user.id)}
    if "profile" in claims.scopes:
        body.update(name=user.name, updated_at=int(user.updated_at.timestamp()))
    if "email" in claims.scopes:
        body.update(email=user.email, email_verified=user.email_verified)
    return body
