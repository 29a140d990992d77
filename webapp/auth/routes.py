"""/api/v1/auth: thin views — parse, call `webapp.auth.service`, serialize."""

from __future__ import annotations

import uuid
from typing import Any

from flask import url_for
from flask.views import MethodView
from flask_smorest import Blueprint

from webapp.auth import password_changes, reauth, service, sessions, verification
from webapp.auth.models import AuthSession
from webapp.auth.schemas import (
    LoginIn,
    LoginMfaIn,
    MfaChallengeOut,
    PasswordChangeIn,
    PasswordResetConfirmIn,
    PasswordResetIn,
    PasswordResetOut,
    ReauthenticatedOut,
    ReauthenticateIn,
    RefreshIn,
    RegisterIn,
    ResendVerificationIn,
    RevokedOut,
    SessionListOut,
    TokenIn,
    TokenPairOut,
)
from webapp.config import current_settings
from webapp.extensions import db, limiter
from webapp.http.access import authenticated, current_principal, public
from webapp.http.idempotency import idempotent
from webapp.http.origin import request_origin
from webapp.http.ratelimit import ip_key
from webapp.oauth.models import OAuthClient
from webapp.users.schemas import UserOut

blp = Blueprint(
    "auth",
    __name__,
    url_prefix="/api/v1/auth",
    description="Sign-up, sign-in, tokens and sessions.",
)


def _auth_limit() -> str:
    return current_settings().ratelimit_auth


# Password-hashing endpoints get a tighter budget per client IP on top of the default one.
auth_limit = limiter.shared_limit(_auth_limit, scope="auth", key_func=ip_key)


@blp.route("/register")
class Register(MethodView):
    @public
    @auth_limit
    @idempotent
    @blp.arguments(RegisterIn)
    @blp.response(201, UserOut)
    def post(self, body: dict[str, Any]) -> tuple[Any, int, dict[str, str]]:
        """Create an account; a verification email is queued."""
        user = service.register(db.session, request_origin(), **body)
        location = url_for("users.UserById", user_id=user.id)
        return user, 201, {"Location": location}


@blp.route("/verify-email")
class VerifyEmail(MethodView):
    @public
    @auth_limit
    @blp.arguments(TokenIn)
    @blp.response(204)
    def post(self, body: dict[str, Any]) -> None:
        """Confirm an email address with the emailed single-use token: a sign-up's, or an
        email change's (its address then becomes the login; 409 if taken meanwhile)."""
        verification.verify_email(db.session, request_origin(), body["token"])


@blp.route("/verify-email/resend")
class ResendVerification(MethodView):
    @public
    @auth_limit
    @blp.arguments(ResendVerificationIn)
    @blp.response(202)
    def post(self, body: dict[str, Any]) -> None:
        """Email a fresh verification link if the address belongs to an unverified sign-up
        (earlier links stop working); the answer is the same whatever the address."""
        verification.resend_verification(db.session, request_origin(), body["email"])


# Two shapes for one status: tokens, or (TOTP active) the challenge of the second step.
LOGIN_RESPONSES = {
    "200": {
        "description": "Tokens, or `{mfa_required: true, mfa_token}` when TOTP is active.",
        "content": {"application/json": {"schema": {"oneOf": [TokenPairOut, MfaChallengeOut]}}},
    }
}


# Instances made once: building a marshmallow schema deep-copies its fields (~150 µs a login).
_TOKEN_PAIR_OUT = TokenPairOut()
_MFA_CHALLENGE_OUT = MfaChallengeOut()


@blp.route("/login")
class Login(MethodView):
    @public
    @auth_limit
    @blp.arguments(LoginIn)
    @blp.response(200)
    @blp.doc(responses=LOGIN_RESPONSES)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Sign in: lockout (429), credentials (401), verified email (403), then tokens — or,
        with TOTP active, an `mfa_token` for `POST /auth/login/mfa`."""
        result = service.login(db.session, request_origin(), **body)
        if isinstance(result, service.MfaChallenge):
            return dict(_MFA_CHALLENGE_OUT.dump(result))
        return dict(_TOKEN_PAIR_OUT.dump(result))


@blp.route("/login/mfa")
class LoginMfa(MethodView):
    @public
    @auth_limit
    @blp.arguments(LoginMfaIn)
    @blp.response(200, TokenPairOut)
    def post(self, body: dict[str, Any]) -> service.TokenPair:
        """Second step of a login with TOTP: the `mfa_token` with a current `code` or a
        `recovery_code`. Wrong codes count towards the account lockout."""
        return service.complete_mfa_login(db.session, request_origin(), **body)


@blp.route("/refresh")
class Refresh(MethodView):
    @public
    @blp.arguments(RefreshIn)
    @blp.response(200, TokenPairOut)
    def post(self, body: dict[str, Any]) -> service.TokenPair:
        """Exchange a refresh token for a new pair; a reused token revokes its session."""
        return service.refresh(db.session, request_origin(), body["refresh_token"])


@blp.route("/logout")
class Logout(MethodView):
    @authenticated
    @blp.response(204)
    def post(self) -> None:
        """End the current session; its access and refresh tokens stop working at once."""
        principal = current_principal()
        assert principal.session_id is not None
        sessions.logout(db.session, request_origin(), principal.session_id)


def _session_item(
    session: AuthSession, current: uuid.UUID | None, clients: dict[uuid.UUID, OAuthClient]
) -> dict[str, Any]:
    client = clients.get(session.client_pk) if session.client_pk else None
    return {
        "id": session.id,
        "created_at": session.created_at,
        "last_used_at": session.last_used_at,
        "expires_at": session.expires_at,
        "idle_expires_at": sessions.idle_deadline(session),
        "remember_me": session.remember_me,
        "ip": session.ip,
        "user_agent": session.user_agent,
        "current": session.id == current,
        "client_id": client.client_id if client else None,
        "client_name": client.client_name if client else None,
    }


@blp.route("/sessions")
class Sessions(MethodView):
    @authenticated
    @blp.response(200, SessionListOut)
    def get(self) -> dict[str, Any]:
        """The caller's active sessions, newest first, each with its absolute end
        (`expires_at`), its idle deadline (`idle_expires_at`) and, for a session an OAuth
        client started, that client (`client_id`, `client_name`)."""
        principal = current_principal()
        live = sessions.list_sessions(db.session, principal.user_id)
        clients = sessions.clients_of(db.session, live)
        return {"items": [_session_item(s, principal.session_id, clients) for s in live]}

    @authenticated
    @blp.response(200, RevokedOut)
    def delete(self) -> dict[str, int]:
        """Revoke every session of the caller except the current one."""
        principal = current_principal()
        count = sessions.revoke_other_sessions(
            db.session, request_origin(), principal.user_id, principal.session_id
        )
        return {"revoked": count}


@blp.route("/sessions/<uuid:session_id>")
class SessionById(MethodView):
    @authenticated
    @blp.response(204)
    def delete(self, session_id: uuid.UUID) -> None:
        """Revoke one of the caller's sessions."""
        principal = current_principal()
        sessions.revoke_session(db.session, request_origin(), principal.user_id, session_id)


@blp.route("/password-reset")
class PasswordReset(MethodView):
    @public
    @auth_limit
    @blp.arguments(PasswordResetIn)
    @blp.response(202)
    def post(self, body: dict[str, Any]) -> None:
        """Email a reset link if the account exists; the answer is the same either way."""
        password_changes.request_password_reset(db.session, request_origin(), body["email"])


@blp.route("/password-reset/confirm")
class PasswordResetConfirm(MethodView):
    @public
    @auth_limit
    @blp.arguments(PasswordResetConfirmIn)
    @blp.response(200, PasswordResetOut)
    def post(self, body: dict[str, Any]) -> dict[str, int]:
        """Set a new password with the emailed token. Every session and every API key of the
        account is revoked (whoever held them may be why the password was forgotten); the body
        says how many, and so does the notice emailed to the owner."""
        return password_changes.confirm_password_reset(
            db.session, request_origin(), body["token"], body["password"]
        )


@blp.route("/password")
class Password(MethodView):
    @authenticated
    @auth_limit
    @blp.arguments(PasswordChangeIn)
    @blp.response(204)
    def post(self, body: dict[str, Any]) -> None:
        """Change the caller's password; the other sessions are revoked, and with
        `revoke_api_keys: true` every API key of the account too. The owner is emailed."""
        principal = current_principal()
        password_changes.change_password(
            db.session, request_origin(), principal.user_id, principal.session_id, **body
        )


@blp.route("/reauthenticate")
class Reauthenticate(MethodView):
    @authenticated
    @auth_limit
    @blp.arguments(ReauthenticateIn)
    @blp.response(200, ReauthenticatedOut)
    def post(self, body: dict[str, Any]) -> reauth.Reauthenticated:
        """Confirm it is still you: the `password`, plus a current TOTP `code` (or a
        `recovery_code`) while TOTP is on. Renews the current session's authentication time,
        so sensitive changes (API keys, TOTP, recovery codes, email) are allowed for
        `REAUTH_MAX_AGE` seconds with the tokens you hold. Wrong answers count towards the
        account lockout, like a login's."""
        principal = current_principal()
        return reauth.reauthenticate(
            db.session, request_origin(), principal.user_id, principal.session_id, **body
        )
