"""`flask oauth purge`: authorization codes expired, and browser sessions ended (past their
absolute end, idle, or with their API session revoked or expired), over a day ago are deleted;
anything younger or still live stays."""

from __future__ import annotations

import uuid
from datetime import timedelta

from flask import Flask
from sqlalchemy import select, update

from tests.support.accounts import Account
from tests.support.oidc import issue_code, redeem
from webapp.auth.models import AuthSession
from webapp.config import settings_of
from webapp.db import new_id, utcnow
from webapp.extensions import db
from webapp.oauth import credentials
from webapp.oauth.browser_models import OAuthBrowserSession
from webapp.oauth.models import OAuthAuthorizationCode

HOUR, DAY = timedelta(hours=1), timedelta(days=1)


def expire_code(app: Flask, plain: str, ago: timedelta) -> None:
    with app.app_context():
        db.session.execute(
            update(OAuthAuthorizationCode)
            .where(OAuthAuthorizationCode.code_hash == credentials.hash_code(plain))
            .values(expires_at=utcnow() - ago)
        )
        db.session.commit()
        db.session.remove()


def browser_session(
    app: Flask,
    account: Account,
    *,
    expires_in: timedelta = DAY,
    seen_ago: timedelta = timedelta(0),
    api_revoked_ago: timedelta | None = None,
    api_expires_in: timedelta = DAY,
) -> uuid.UUID:
    """A browser session row over an API session of its own, aged as asked; its id."""
    now = utcnow()
    with app.app_context():
        api = AuthSession(
            id=new_id(),
            user_id=account.id,
            created_at=now - 3 * DAY,
            last_used_at=now - seen_ago,
            auth_time=now - 3 * DAY,
            expires_at=now + api_expires_in,
            revoked_at=None if api_revoked_ago is None else now - api_revoked_ago,
        )
        row = OAuthBrowserSession(
            id=new_id(),
            cookie_hash=uuid.uuid4().hex,
            user_id=account.id,
            auth_session_id=api.id,
            auth_time=now - 3 * DAY,
            amr=["pwd"],
            created_at=now - 3 * DAY,
            last_seen_at=now - seen_ago,
            expires_at=now + expires_in,
        )
        db.session.add(api)
        db.session.flush()
        db.session.add(row)
        db.session.commit()
        db.session.remove()
    return row.id


def remaining(app: Flask) -> tuple[set[str], set[uuid.UUID]]:
    with app.app_context():
        code_hashes = set(db.session.scalars(select(OAuthAuthorizationCode.code_hash)))
        browsers = set(db.session.scalars(select(OAuthBrowserSession.id)))
        db.session.remove()
    return code_hashes, browsers


def test_purge_deletes_what_ended_over_a_day_ago_and_nothing_else(app, web_app, member):
    old_code = issue_code(app, web_app, member.id)
    recent_code = issue_code(app, web_app, member.id)
    live_code = issue_code(app, web_app, member.id)
    expire_code(app, old_code, DAY + HOUR)
    expire_code(app, recent_code, HOUR)
    idle = timedelta(seconds=settings_of(app).session_idle_ttl)
    live = browser_session(app, member)
    doomed = {
        browser_session(app, member, expires_in=-(DAY + HOUR)),
        browser_session(app, member, seen_ago=DAY + idle + HOUR),
        browser_session(app, member, api_revoked_ago=DAY + HOUR),
        browser_session(app, member, api_expires_in=-(DAY + HOUR)),
    }
    kept = {
        live,
        browser_session(app, member, expires_in=-HOUR),
        browser_session(app, member, seen_ago=idle + HOUR),
        browser_session(app, member, api_revoked_ago=HOUR),
    }

    result = app.test_cli_runner().invoke(args=["oauth", "purge"])

    assert result.exit_code == 0, result.output
    assert "deleted 1 authorization code(s) and 4 browser session(s)" in result.output
    code_hashes, browsers = remaining(app)
    with app.app_context():
        assert code_hashes == {credentials.hash_code(c) for c in (recent_code, live_code)}
    assert browsers == kept
    assert not doomed & browsers
    again = app.test_cli_runner().invoke(args=["oauth", "purge"])
    assert "deleted 0 authorization code(s) and 0 browser session(s)" in again.output


def test_a_code_replayed_within_the_day_is_still_recognised(app, client, web_app, member):
    """The margin is why used codes are kept: a replay still revokes what the code bought."""
    plain = issue_code(app, web_app, member.id)
    first = redeem(client, web_app, plain)
    assert first.status_code == 200
    expire_code(app, plain, HOUR)
    assert app.test_cli_runner().invoke(args=["oauth", "purge"]).exit_code == 0

    replay = redeem(client, web_app, plain)

    assert replay.json["error"] == "invalid_grant"
    bearer = {"Authorization": f"Bearer {first.json['access_token']}"}
    assert client.get("/oauth/userinfo", headers=bearer).status_code == 401
