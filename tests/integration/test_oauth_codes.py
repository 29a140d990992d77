"""Authorization codes on the real PostgreSQL (the authorize endpoint that issues them comes
later): stored only as a hash, valid 60 s, single use even under concurrent redemption, bound to
the client and the redirect URI they were issued for, and carrying what the ID token will need."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, update

from tests.support.oauth import WEB_APP, register
from webapp.db import utcnow
from webapp.extensions import db
from webapp.oauth import codes, credentials
from webapp.oauth.models import CODE_TTL, OAuthAuthorizationCode, OAuthClient

CALLBACK = WEB_APP["redirect_uris"][0]
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


@pytest.fixture
def two_clients(client, admin) -> tuple[dict[str, Any], dict[str, Any]]:
    return register(client, admin, **WEB_APP), register(client, admin, **WEB_APP)


def in_app(app: Flask, work: Callable[[Any], Any]) -> Any:
    with app.app_context():
        try:
            return work(db.session)
        finally:
            db.session.remove()


def load(session: Any, body: dict[str, Any]) -> OAuthClient:
    found = session.get(OAuthClient, uuid.UUID(body["id"]))
    assert found is not None
    return found


def issue(app: Flask, body: dict[str, Any], user_id: uuid.UUID, **extra: Any) -> str:
    def work(session: Any) -> str:
        plain = codes.issue_code(
            session,
            load(session, body),
            user_id=user_id,
            redirect_uri=extra.pop("redirect_uri", CALLBACK),
            scope="openid email",
            code_challenge=CHALLENGE,
            nonce="n-0S6_WzA2Mj",
            auth_time=utcnow() - timedelta(seconds=30),
            amr=["pwd", "otp", "mfa"],
        )
        session.commit()
        return plain

    return str(in_app(app, work))


def redeem(app: Flask, body: dict[str, Any], plain: str, redirect_uri: str | None = CALLBACK):
    def work(session: Any) -> codes.Redemption:
        outcome = codes.redeem_code(session, load(session, body), plain, redirect_uri)
        session.commit()
        if outcome.code is not None:
            session.expunge(outcome.code)
        return outcome

    return in_app(app, work)


def test_a_code_is_stored_as_a_hash_and_redeemed_once_with_what_the_id_token_needs(
    app, admin, two_clients
):
    web, _ = two_clients
    plain = issue(app, web, admin.id)

    row = in_app(
        app,
        lambda s: s.scalar(
            select(OAuthAuthorizationCode).execution_options(populate_existing=True)
        ),
    )
    assert plain not in row.code_hash
    with app.app_context():
        assert row.code_hash == credentials.hash_code(plain)
    assert (row.expires_at - row.created_at).total_seconds() == CODE_TTL <= 60
    assert row.code_challenge_method == "S256"

    first = redeem(app, web, plain)

    assert first.error is None
    code = first.code
    assert code.get_redirect_uri() == CALLBACK
    assert code.get_scope() == "openid email"
    assert code.get_nonce() == "n-0S6_WzA2Mj"
    assert code.get_amr() == ["pwd", "otp", "mfa"]
    assert code.get_auth_time() == int(row.auth_time.timestamp())
    assert code.used_at is not None

    second = redeem(app, web, plain)
    assert second.error == "reused"
    assert second.code is not None  # names the first redemption, whose tokens are to be revoked


def test_an_expired_code_is_refused(app, admin, two_clients):
    web, _ = two_clients
    plain = issue(app, web, admin.id)

    def expire(session: Any) -> None:
        session.execute(
            update(OAuthAuthorizationCode).values(expires_at=utcnow() - timedelta(seconds=1))
        )
        session.commit()

    in_app(app, expire)

    assert redeem(app, web, plain).error == "expired"


def test_a_code_is_bound_to_its_client_and_redirect_uri_and_burnt_by_a_wrong_attempt(
    app, admin, two_clients
):
    web, other = two_clients
    stolen = issue(app, web, admin.id)
    mismatched = issue(app, web, admin.id)

    assert redeem(app, other, stolen).error == "wrong_client"
    assert redeem(app, web, stolen).error == "reused"  # burnt by the thief's attempt
    assert redeem(app, web, mismatched, "https://wiki.example.com/other").error == (
        "wrong_redirect_uri"
    )
    assert redeem(app, web, mismatched, None).error == "reused"
    assert redeem(app, web, "not-a-code").error == "unknown"


def test_a_code_cannot_be_issued_for_an_unregistered_redirect_uri(app, admin, two_clients):
    web, _ = two_clients

    with pytest.raises(ValueError, match="redirect_uri"):
        issue(app, web, admin.id, redirect_uri="https://wiki.example.com/oauth/callback/")


def test_concurrent_redemptions_of_one_code_have_exactly_one_winner(app, admin, two_clients):
    web, _ = two_clients
    plain = issue(app, web, admin.id)
    barrier = threading.Barrier(4)
    outcomes: list[str | None] = []

    def attempt() -> None:
        barrier.wait()
        outcomes.append(redeem(app, web, plain).error)

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes, key=str) == [None, "reused", "reused", "reused"]


def test_purge_deletes_only_codes_past_their_lifetime(app, admin, two_clients):
    web, _ = two_clients
    issue(app, web, admin.id)
    issue(app, web, admin.id)

    def purge(session: Any, later: int) -> int:
        count = codes.purge_expired(session, utcnow() + timedelta(seconds=later))
        session.commit()
        return count

    assert in_app(app, lambda s: purge(s, 0)) == 0
    assert in_app(app, lambda s: purge(s, CODE_TTL + 1)) == 2
