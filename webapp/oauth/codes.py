"""Authorization codes: issued to one client for one redirect URI and PKCE challenge, single use,
valid `CODE_TTL` seconds.

Only a hash of the code is stored. Consuming marks the row used in the same statement that finds
it (`UPDATE … WHERE used_at IS NULL … RETURNING`), so two concurrent redemptions cannot both win;
a code presented again is reported as reused, which the token endpoint answers by revoking what
the first redemption issued (RFC 6749 §4.1.2).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update

from webapp.db import DbSession, utcnow
from webapp.oauth import credentials
from webapp.oauth.models import CODE_TTL, OAuthAuthorizationCode, OAuthClient

S256 = "S256"  # the only PKCE method accepted: `plain` gives no protection against a leaked code


@dataclass(frozen=True)
class Redemption:
    """The outcome of presenting a code: the row when it was valid for this client and redirect
    URI, else why not (`reused` means it had been redeemed before, `code` still names the row)."""

    code: OAuthAuthorizationCode | None
    error: str | None = None


def issue_code(
    db: DbSession,
    client: OAuthClient,
    *,
    user_id: uuid.UUID,
    redirect_uri: str,
    scope: str,
    code_challenge: str,
    nonce: str | None,
    auth_time: datetime,
    amr: list[str],
) -> str:
    """A new code in the caller's unit of work; the plain code is returned, never stored."""
    if not client.check_redirect_uri(redirect_uri):
        raise ValueError("redirect_uri is not registered for this client")
    plain = credentials.new_code()
    now = utcnow()
    db.add(
        OAuthAuthorizationCode(
            code_hash=credentials.hash_code(plain),
            client_pk=client.id,
            user_id=user_id,
            redirect_uri=redirect_uri,
            scope=scope,
            code_challenge=code_challenge,
            code_challenge_method=S256,
            nonce=nonce,
            auth_time=auth_time,
            amr=amr,
            created_at=now,
            expires_at=now + timedelta(seconds=CODE_TTL),
        )
    )
    return plain


def redeem_code(
    db: DbSession, client: OAuthClient, plain: str, redirect_uri: str | None
) -> Redemption:
    """Mark the code used and return it when it is unused, unexpired, and was issued to `client`
    for `redirect_uri`. A code presented by another client or with another redirect URI is
    consumed all the same: whoever holds it has shown it is no longer secret."""
    digest = credentials.hash_code(plain)
    now = utcnow()
    claimed = db.scalar(
        update(OAuthAuthorizationCode)
        .where(OAuthAuthorizationCode.code_hash == digest, OAuthAuthorizationCode.used_at.is_(None))
        .values(used_at=now)
        .returning(OAuthAuthorizationCode)
        .execution_options(synchronize_session=False)
    )
    if claimed is None:
        previous = db.scalar(
            select(OAuthAuthorizationCode).where(OAuthAuthorizationCode.code_hash == digest)
        )
        return Redemption(previous, "reused" if previous is not None else "unknown")
    if claimed.expires_at <= now:
        return Redemption(None, "expired")
    if claimed.client_pk != client.id:
        return Redemption(None, "wrong_client")
    if redirect_uri != claimed.redirect_uri:
        return Redemption(None, "wrong_redirect_uri")
    return Redemption(claimed)


def purge_expired(db: DbSession, now: datetime | None = None) -> int:
    """Delete codes past their lifetime (used or not); returns how many."""
    result = db.execute(
        delete(OAuthAuthorizationCode).where(OAuthAuthorizationCode.expires_at <= (now or utcnow()))
    )
    return int(getattr(result, "rowcount", 0) or 0)
