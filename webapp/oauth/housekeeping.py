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

from sqlalchemy import delete, or_, select

from webapp.auth.models import AuthSession
from webapp.config import current_settings
from webapp.db import DbSession, utcnow
from webapp.oauth import codes
from webapp.oauth.browser_models import OAuthBrowserSession

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
    deleted = 0
    while True:
        chunk = (
            select(OAuthBrowserSession.id)
            .where(
                or_(
                    OAuthBrowserSession.expires_at <= before,
                    OAuthBrowserSession.last_seen_at <= before - idle,
                    OAuthBrowserSession.auth_session_id.in_(ended_api_sessions),
                )
            )
            .limit(BATCH)
        )
        result = db.execute(delete(OAuthBrowserSession).where(OAuthBrowserSession.id.in_(chunk)))
        db.commit()
        count = int(getattr(result, "rowcount", 0) or 0)
        deleted += count
        if count < BATCH:
            return deleted


def purge(db: DbSession, *, now: datetime | None = None) -> Purged:
    """Delete the codes that expired, and the browser sessions that ended, more than
    PURGE_MARGIN before `now`; committed."""
    before = (now or utcnow()) - PURGE_MARGIN
    code_count = 0
    while True:
        count = codes.purge_expired(db, before, limit=BATCH)
        db.commit()
        code_count += count
        if count < BATCH:
            break
    return Purged(code_count, _ended_browser_sessions(db, before), before)
