"""Housekeeping of the provider's short-lived rows: authorization codes and browser sessions.

Neither table cleans itself: a code row outlives its 60 seconds (it is marked used, not deleted,
so a second presentation can be told apart and revoke what the first one bought), and a browser
session's row stays after it ended (idle, past its absolute end, its API session revoked or
expired) until its user is deleted. `purge` deletes both once they have been over for
`PURGE_MARGIN` (a day): a code replayed within that day is still recognised as reused, and a
day-old ended session tells nobody anything. In short batches, each committed; run by
`flask oauth purge` from a daily cron job (docs/oidc.md, "Housekeeping").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select

from webapp.auth.models import AuthSession
from webapp.config import current_settings
from webapp.db import DbSession, delete_in_batches, utcnow
from webapp.oauth.browser_models import OAuthBrowserSession
from webapp.oauth.models import OAuthAuthorizationCode

PURGE_MARGIN = timedelta(days=1)
BATCH = 1000  # rows per delete: short transactions, no long lock on a busy table


@dataclass(frozen=True)
class Purged:
    codes: int
    browser_sessions: int
    before: datetime  # what had ended before this went


def _ended_browser_sessions(db: DbSession, before: datetime) -> int:
    idle = timedelta(seconds=current_settings().session_idle_ttl)
    ended_api_sessions = select(AuthSession.id).where(
        or_(AuthSession.revoked_at <= before, AuthSession.expires_at <= before)
    )
    ended = or_(
        OAuthBrowserSession.expires_at <= before,
        OAuthBrowserSession.last_seen_at <= before - idle,
        OAuthBrowserSession.auth_session_id.in_(ended_api_sessions),
    )
    return delete_in_batches(db, OAuthBrowserSession, ended, batch=BATCH)


def purge(db: DbSession, *, now: datetime | None = None) -> Purged:
    """Delete the codes that expired, and the browser sessions that ended, more than
    PURGE_MARGIN before `now`; committed."""
    before = (now or utcnow()) - PURGE_MARGIN
    code_count = delete_in_batches(
        db, OAuthAuthorizationCode, OAuthAuthorizationCode.expires_at <= before, batch=BATCH
    )
    return Purged(code_count, _ended_browser_sessions(db, before), before)
