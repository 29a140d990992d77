"""OpenID Connect end to end, as a user meets it: the production server (gunicorn) as the provider
at http://127.0.0.1:<port>, a relying party built on a stock client library (Authlib's
`OAuth2Session`, tests/support/relying_party.py) on another port, and headless Chromium clicking
through the provider's real pages (sign-in, TOTP, consent, sign-out). ID tokens are verified
with jwcrypto, independent of the provider's JOSE code; TOTP codes are computed with pyotp.

The checks of the OpenID Foundation's Basic OP profile that these cover are listed in
docs/oidc.md ("OpenID Foundation Basic OP profile: what the tests cover")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from authlib.integrations.base_client import OAuthError
from flask import Flask
from playwright.sync_api import BrowserContext, Page, expect

from tests.support.accounts import Account
from tests.support.gunicorn import serve
from tests.support.mfa import code_at
from tests.support.oidc import at_hash
from tests.support.relying_party import RelyingParty
from tests.support.waiting import free_port
from webapp.config import Settings
from webapp.context import SYSTEM
from webapp.extensions import db
from webapp.mfa import service as mfa_service
from webapp.oauth.browser_sessions import COOKIE_NAME

pytestmark = pytest.mark.slow
WALK_THROUGH = Path(__file__).resolve().parents[2] / "docs" / "examples" / "oidc_signin.py"


@pytest.fixture(scope="module")
def issuer(
    app: Flask,
    base_settings: Settings,
    database_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """gunicorn on the migrated test database (`app` migrated it), its own URL as the issuer:
    plain http on 127.0.0.1 outside production, so its cookie works without TLS. It shares the
    test app's secrets: the TOTP secrets the tests enrol are encrypted, and the client secrets
    the CLI prints are hashed (SECRET_KEY's pepper), by the test app."""
    assert base_settings.encryption_keys is not None
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with serve(
        database_url,
        redis_url,
        tmp_path_factory.mktemp("provider"),
        port=port,
        GATEHOUSE_ENV="test",
        SECRET_KEY=base_settings.secret_key,
        ENCRYPTION_KEYS=base_settings.encryption_keys,
        PUBLIC_BASE_URL=url,
        OIDC_ISSUER=url,
    ):
        yield url


def create_client(app: Flask, name: str, rp: RelyingParty, *options: str) -> dict[str, str]:
    """`flask oauth create-client` as the walk-through of docs/oidc.md runs it; its output."""
    result = app.test_cli_runner().invoke(
        args=[
            "oauth",
            "create-client",
            "--name",
            name,
            "--redirect-uri",
            rp.redirect_uri,
            "--post-logout-redirect-uri",
            rp.post_logout_redirect_uri,
            "--grant-type",
            "authorization_code",
            "--grant-type",
            "refresh_token",
            "--scope",
            "openid profile email",
            *options,
        ]
    )
    assert result.exit_code == 0, result.output
    return dict(
        line.split(": ", 1) for line in result.output.splitlines() if line.startswith("client_")
    )


def enable_totp(app: Flask, account: Account) -> str:
    """TOTP through the service functions; confirmed with the previous step's code so that the
    current one is still unused for the sign-in."""
    with app.app_context():
        secret = mfa_service.enrol(db.session, SYSTEM, account.id).secret
        mfa_service.confirm(db.session, SYSTEM, account.id, code_at(secret, -1))
        db.session.remove()
    return secret


def navigations(page: Page) -> list[str]:
    """Every URL the page's main frame requests from now on, each redirect hop included."""
    seen: list[str] = []
    page.on(
        "request",
        lambda r: (
            seen.append(r.url) if r.is_navigation_request() and r.frame == page.main_frame else None
        ),
    )
    return seen


def paths(urls: list[str], origin: str) -> list[str]:
    return [urlsplit(u).path for u in urls if u.startswith(origin)]


def introspect(rp: RelyingParty, session: Any, token: str) -> dict[str, Any]:
    response = session.introspect_token(rp.metadata["introspection_endpoint"], token=token)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_sign_in_with_totp_and_consent_then_refresh_revoke_and_log_out(
    app: Flask,
    issuer: str,
    browser_context: BrowserContext,
    make_user: Callable[..., Account],
) -> None:
    user = make_user(login=False, name="Ada Lovelace")
    secret = enable_totp(app, user)
    rp = RelyingParty(issuer, "", None)
    issued = create_client(app, "Wiki", rp)
    rp.client_id, rp.client_secret = issued["client_id"], issued["client_secret"]

    with rp.running():
        assert rp.metadata["code_challenge_methods_supported"] == ["S256"]
        page = browser_context.new_page()
        seen = navigations(page)

        # The relying party's link: to the provider's sign-in page.
        page.goto(f"{rp.base}/login")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        expect(page.get_by_text("to continue to Wiki")).to_be_visible()
        page.get_by_label("Email").fill(user.email)
        page.get_by_label("Password").fill(user.password)
        page.get_by_role("button", name="Sign in").click()

        expect(page.get_by_role("heading", name="Two-factor authentication")).to_be_visible()
        page.get_by_label("Authentication code").fill(code_at(secret))
        page.get_by_role("button", name="Verify").click()

        expect(page.get_by_role("heading", name="Allow Wiki?")).to_be_visible()
        expect(page.get_by_role("listitem")).to_have_count(3)  # openid, profile, email in words
        expect(page.get_by_text("Your email address, and whether it is verified")).to_be_visible()
        page.get_by_role("button", name="Allow").click()

        expect(page.get_by_role("heading", name="Signed in")).to_be_visible()
        first = rp.last
        assert first.token is not None, first.token_error
        # RFC 9207: the answer names its issuer; the state is the request's.
        assert first.params["iss"] == issuer
        assert first.params["state"] == first.flow.state
        assert paths(seen, issuer) == [
            "/oauth/authorize",
            "/oauth/login",
            "/oauth/login/mfa",
            "/oauth/consent",
        ]
        cookie = next(c for c in browser_context.cookies() if c["name"] == COOKIE_NAME)
        assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Lax", "/oauth")

        # The token response, and its ID token verified independently.
        token = first.token
        assert token["token_type"].lower() == "bearer"
        assert set(token["scope"].split()) == {"openid", "profile", "email"}
        claims = rp.verify_id_token(token["id_token"])
        assert claims["_header"]["alg"] == "RS256"
        assert claims["sub"] == str(user.id)
        assert claims["azp"] == rp.client_id
        assert claims["nonce"] == first.flow.nonce
        assert claims["at_hash"] == at_hash(token["access_token"])
        assert {"pwd", "otp", "mfa"} <= set(claims["amr"])
        assert time.time() - 120 < claims["auth_time"] <= claims["iat"]

        # UserInfo with the access token, through the client library.
        session = first.session
        assert session is not None
        userinfo = session.get(rp.metadata["userinfo_endpoint"])
        assert userinfo.status_code == 200, userinfo.text
        assert userinfo.json() == {
            "sub": str(user.id),
            "name": "Ada Lovelace",
            "updated_at": userinfo.json()["updated_at"],
            "email": user.email,
            "email_verified": True,
        }

        # Refresh: all new tokens, the same sign-in.
        old = dict(token)
        fresh = dict(session.refresh_token(rp.metadata["token_endpoint"]))
        assert fresh["access_token"] != old["access_token"]
        assert fresh["refresh_token"] != old["refresh_token"]
        refreshed = rp.verify_id_token(fresh["id_token"])
        assert refreshed["sub"] == claims["sub"]
        assert refreshed["auth_time"] == claims["auth_time"]
        assert "nonce" not in refreshed
        assert refreshed["at_hash"] == at_hash(fresh["access_token"])
        assert introspect(rp, session, fresh["access_token"])["active"] is True

        # Revocation (RFC 7009) ends the session: introspection, UserInfo and refresh refuse it.
        revoked = session.revoke_token(
            rp.metadata["revocation_endpoint"],
            token=fresh["refresh_token"],
            token_type_hint="refresh_token",
        )
        assert revoked.status_code == 200, revoked.text
        assert introspect(rp, session, fresh["access_token"]) == {"active": False}
        assert introspect(rp, session, fresh["refresh_token"]) == {"active": False}
        after = session.get(rp.metadata["userinfo_endpoint"])
        assert after.status_code == 401
        assert 'error="invalid_token"' in after.headers["WWW-Authenticate"]
        for refresh_token in (fresh["refresh_token"], old["refresh_token"]):
            with pytest.raises(OAuthError) as refused:
                rp.oauth().refresh_token(rp.metadata["token_endpoint"], refresh_token=refresh_token)
            assert refused.value.error == "invalid_grant"

        # The browser is still signed in at the provider: prompt=none gets a code, no page;
        # optional parameters the provider does not implement are ignored, as OIDC Core asks.
        seen.clear()
        ignored = "display=page&ui_locales=en&claims_locales=en&acr_values=1&x-unknown=1"
        page.goto(f"{rp.base}/login?prompt=none&{ignored}")
        expect(page.get_by_role("heading", name="Signed in")).to_be_visible()
        assert paths(seen, issuer) == ["/oauth/authorize"]
        silent = rp.last
        assert silent.token is not None, silent.token_error
        assert rp.verify_id_token(silent.token["id_token"])["auth_time"] == claims["auth_time"]

        # RP-initiated logout: the confirm page, then back to the relying party with its state.
        page.goto(f"{rp.base}/logout")
        expect(page.get_by_role("heading", name="Sign out?")).to_be_visible()
        expect(page.get_by_text("Wiki asks to sign you out of Gatehouse.")).to_be_visible()
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("heading", name="Signed out of the relying party")).to_be_visible()
        assert rp.logouts == [{"state": rp.logout_state}]

        # The provider's session is gone: prompt=none now answers login_required.
        page.goto(f"{rp.base}/login?prompt=none")
        expect(page.get_by_role("heading", name="Sign-in failed: login_required")).to_be_visible()
        assert rp.last.params["error"] == "login_required"
        assert rp.last.params["state"] == rp.last.flow.state
        assert rp.last.params["iss"] == issuer


def test_first_party_public_client_skips_consent_and_prompt_none_needs_no_page(
    app: Flask,
    issuer: str,
    browser_context: BrowserContext,
    make_user: Callable[..., Account],
) -> None:
    user = make_user(login=False)
    rp = RelyingParty(issuer, "", None, scope="email openid")  # another order, fewer scopes
    issued = create_client(app, "Console", rp, "--first-party", "--auth-method", "none")
    assert "client_secret" not in issued
    rp.client_id = issued["client_id"]

    with rp.running():
        page = browser_context.new_page()
        seen = navigations(page)
        page.goto(f"{rp.base}/login")
        page.get_by_label("Email").fill(user.email)
        page.get_by_label("Password").fill(user.password)
        page.get_by_role("button", name="Sign in").click()

        # No consent page: straight back to the relying party with a code.
        expect(page.get_by_role("heading", name="Signed in")).to_be_visible()
        assert paths(seen, issuer) == ["/oauth/authorize", "/oauth/login"]
        first = rp.last
        assert first.token is not None, first.token_error
        assert set(first.token["scope"].split()) == {"openid", "email"}
        claims = rp.verify_id_token(first.token["id_token"])
        assert claims["sub"] == str(user.id)
        assert claims["amr"] == ["pwd"]
        assert claims["nonce"] == first.flow.nonce

        # A live session and prompt=none (with the ID token as hint): a code without a page.
        seen.clear()
        page.goto(f"{rp.base}/login?prompt=none&id_token_hint={first.token['id_token']}")
        expect(page.get_by_role("heading", name="Signed in")).to_be_visible()
        assert paths(seen, issuer) == ["/oauth/authorize"]
        second = rp.last
        assert second is not first
        assert second.token is not None, second.token_error
        silent = rp.verify_id_token(second.token["id_token"])
        assert silent["auth_time"] == claims["auth_time"]
        assert silent["nonce"] == second.flow.nonce != first.flow.nonce

        # Rotation with reuse detection, for a public client (client_id, no secret): the
        # replaced refresh token is refused, and its reuse ends the whole session.
        session = rp.oauth(token=second.token)
        fresh = dict(session.refresh_token(rp.metadata["token_endpoint"]))
        assert fresh["refresh_token"] != second.token["refresh_token"]
        for refresh_token in (second.token["refresh_token"], fresh["refresh_token"]):
            with pytest.raises(OAuthError) as refused:
                rp.oauth().refresh_token(rp.metadata["token_endpoint"], refresh_token=refresh_token)
            assert refused.value.error == "invalid_grant"
        userinfo = requests.get(
            rp.metadata["userinfo_endpoint"],
            headers={"Authorization": f"Bearer {fresh['access_token']}"},
            timeout=10,
        )
        assert userinfo.status_code == 401
        # The sign-in of the first code is another session: untouched (UserInfo by POST).
        assert first.session is not None
        still = first.session.post(rp.metadata["userinfo_endpoint"])
        assert still.status_code == 200
        assert still.json() == {"sub": claims["sub"], "email": user.email, "email_verified": True}


def test_the_walk_through_script_of_the_docs_signs_in(
    app: Flask,
    issuer: str,
    browser_context: BrowserContext,
    make_user: Callable[..., Account],
) -> None:
    """docs/examples/oidc_signin.py, as docs/oidc.md's walk-through runs it, with the browser
    Chromium: the client from the CLI, the ID token verified and UserInfo printed."""
    user = make_user(login=False, name="Grace Hopper")
    rp = RelyingParty(issuer, "", None)
    issued = create_client(app, "Walk-through", rp)
    env = {
        **os.environ,
        "GATEHOUSE": issuer,
        "REDIRECT_URI": rp.redirect_uri,
        "BROWSER": "true",  # webbrowser.open runs `true URL`: Chromium below opens it instead
    }
    script = subprocess.Popen(
        [sys.executable, str(WALK_THROUGH), issued["client_id"], issued["client_secret"]],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert script.stdout is not None
        first = script.stdout.readline()
        assert first.startswith("Sign in at "), first
        page = browser_context.new_page()
        page.goto(first.removeprefix("Sign in at ").strip())
        page.get_by_label("Email").fill(user.email)
        page.get_by_label("Password").fill(user.password)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("button", name="Allow").click()
        expect(page.get_by_text("Signed in: back to the terminal.")).to_be_visible()
        out, err = script.communicate(timeout=30)
    finally:
        if script.poll() is None:
            script.kill()
            script.wait()
    assert script.returncode == 0, err
    lines = dict(line.split(": ", 1) for line in out.splitlines())
    claims = json.loads(lines["ID token"])
    assert (claims["sub"], claims["aud"], claims["iss"]) == (
        str(user.id),
        issued["client_id"],
        issuer,
    )
    assert json.loads(lines["UserInfo"]) == {
        "sub": str(user.id),
        "name": "Grace Hopper",
        "updated_at": json.loads(lines["UserInfo"])["updated_at"],
        "email": user.email,
        "email_verified": True,
    }
