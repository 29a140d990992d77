"""/api/v1/auth/mfa: the caller's second factor. Thin views over `webapp.mfa.service`.

Every change needs a recent authentication (`@requires_recent_auth`): with a stolen access token
alone, an attacker could otherwise enrol their own authenticator and lock the owner out."""

from __future__ import annotations

from typing import Any

from flask import url_for
from flask.views import MethodView
from flask_smorest import Blueprint

from webapp.auth.routes import auth_limit
from webapp.extensions import db
from webapp.http.access import authenticated, current_principal, requires_recent_auth
from webapp.http.idempotency import idempotent_sensitive
from webapp.http.origin import request_origin
from webapp.mfa import service
from webapp.mfa.schemas import (
    MfaStatusOut,
    RecoveryCodesOut,
    TotpConfirmIn,
    TotpDisableIn,
    TotpEnrolmentOut,
)

blp = Blueprint(
    "mfa",
    __name__,
    url_prefix="/api/v1/auth/mfa",
    description="Multi-factor authentication: TOTP and recovery codes.",
)


@blp.route("")
class MfaStatus(MethodView):
    @authenticated
    @blp.response(200, MfaStatusOut)
    def get(self) -> dict[str, object]:
        """Whether TOTP is enabled, and how many recovery codes are left."""
        return service.status(db.session, current_principal().user_id)


@blp.route("/totp")
class Totp(MethodView):
    @authenticated
    @requires_recent_auth
    @idempotent_sensitive
    @blp.response(201, TotpEnrolmentOut)
    def post(self) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Start enrolment: a new secret and its `otpauth://` URI (replacing an unconfirmed
        one). Nothing changes at login until `POST /totp/confirm`. 409 while TOTP is active."""
        enrolment = service.enrol(db.session, request_origin(), current_principal().user_id)
        body = {
            "secret": enrolment.secret,
            "otpauth_uri": enrolment.otpauth_uri,
            "digits": service.DIGITS,
            "period": service.INTERVAL,
            "algorithm": "SHA1",
        }
        return body, 201, {"Location": url_for("mfa.MfaStatus")}

    @authenticated
    @requires_recent_auth
    @auth_limit
    @blp.arguments(TotpDisableIn)
    @blp.response(204)
    def delete(self, body: dict[str, Any]) -> None:
        """Turn TOTP off with a current `code` or the account `password`; wrong ones count
        towards the account lockout. The recovery codes are deleted too."""
        service.disable(db.session, request_origin(), current_principal().user_id, **body)


@blp.route("/totp/confirm")
class TotpConfirm(MethodView):
    @authenticated
    @requires_recent_auth
    @auth_limit
    @idempotent_sensitive
    @blp.arguments(TotpConfirmIn)
    @blp.response(200, RecoveryCodesOut)
    def post(self, body: dict[str, Any]) -> dict[str, list[str]]:
        """Activate TOTP with a first code from the authenticator; returns the recovery codes,
        shown this once."""
        codes = service.confirm(
            db.session, request_origin(), current_principal().user_id, body["code"]
        )
        return {"recovery_codes": codes}


@blp.route("/recovery-codes")
class RecoveryCodes(MethodView):
    @authenticated
    @requires_recent_auth
    @idempotent_sensitive
    @blp.response(200, RecoveryCodesOut)
    def post(self) -> dict[str, list[str]]:
        """Replace the recovery codes with ten new ones, shown this once; every earlier code
        stops working. TOTP must be on (404 `mfa-not-enabled`)."""
        codes = service.regenerate_recovery_codes(
            db.session, request_origin(), current_principal().user_id
        )
        return {"recovery_codes": codes}
