"""Request and response bodies of /api/v1/auth."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from webapp.schemas import StrictSchema


class RegisterIn(StrictSchema):
    email = fields.Email(required=True, validate=validate.Length(max=320))
    password = fields.String(required=True, validate=validate.Length(min=1, max=1024))
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))


class TokenIn(StrictSchema):
    token = fields.String(required=True, validate=validate.Length(min=1, max=512))


class LoginIn(StrictSchema):
    email = fields.Email(required=True, validate=validate.Length(max=320))
    password = fields.String(required=True, validate=validate.Length(min=1, max=1024))
    remember_me = fields.Boolean(
        load_default=False,
        metadata={
            "description": "longer session: REMEMBER_ME_TTL and REMEMBER_ME_IDLE_TTL instead "
            "of REFRESH_TOKEN_TTL and SESSION_IDLE_TTL (kept through the MFA step)"
        },
    )


class RefreshIn(StrictSchema):
    refresh_token = fields.String(required=True, validate=validate.Length(min=1, max=512))


class TokenPairOut(Schema):
    access_token = fields.String(required=True)
    refresh_token = fields.String(required=True)
    token_type = fields.String(required=True)
    expires_in = fields.Integer(required=True, metadata={"description": "seconds"})


class MfaChallengeOut(Schema):
    mfa_required = fields.Boolean(required=True, metadata={"description": "always true"})
    mfa_token = fields.String(
        required=True, metadata={"description": "single use; send it to /auth/login/mfa"}
    )
    expires_in = fields.Integer(required=True, metadata={"description": "seconds"})


class LoginMfaIn(StrictSchema):
    mfa_token = fields.String(required=True, validate=validate.Length(min=1, max=512))
    code = fields.String(
        validate=validate.Regexp(r"^[0-9]{6}$"), metadata={"description": "the current TOTP code"}
    )
    recovery_code = fields.String(
        validate=validate.Length(min=1, max=64),
        metadata={"description": "one of the recovery codes (each works once)"},
    )

    @validates_schema
    def _one_proof(self, data: dict[str, object], **_: object) -> None:
        if ("code" in data) == ("recovery_code" in data):
            raise ValidationError("send either code or recovery_code", "code")


class PasswordResetIn(StrictSchema):
    email = fields.Email(required=True, validate=validate.Length(max=320))


class ResendVerificationIn(StrictSchema):
    email = fields.Email(required=True, validate=validate.Length(max=320))


class PasswordResetConfirmIn(StrictSchema):
    token = fields.String(required=True, validate=validate.Length(min=1, max=512))
    password = fields.String(required=True, validate=validate.Length(min=1, max=1024))


class PasswordChangeIn(StrictSchema):
    current_password = fields.String(required=True, validate=validate.Length(min=1, max=1024))
    new_password = fields.String(required=True, validate=validate.Length(min=1, max=1024))
    revoke_api_keys = fields.Boolean(
        load_default=False, metadata={"description": "revoke every API key of the account too"}
    )


class PasswordResetOut(Schema):
    sessions_revoked = fields.Integer(
        required=True, metadata={"description": "sessions signed out (all of them)"}
    )
    api_keys_revoked = fields.Integer(
        required=True, metadata={"description": "API keys revoked (all active ones)"}
    )


class ReauthenticateIn(StrictSchema):
    password = fields.String(required=True, validate=validate.Length(min=1, max=1024))
    code = fields.String(
        validate=validate.Regexp(r"^[0-9]{6}$"),
        metadata={"description": "the current TOTP code; required while TOTP is on"},
    )
    recovery_code = fields.String(
        validate=validate.Length(min=1, max=64),
        metadata={"description": "instead of `code`: a recovery code (used up)"},
    )

    @validates_schema
    def _one_proof(self, data: dict[str, object], **_: object) -> None:
        if "code" in data and "recovery_code" in data:
            raise ValidationError("send code or recovery_code, not both", "code")


class ReauthenticatedOut(Schema):
    auth_time = fields.DateTime(
        required=True, metadata={"description": "the session's new authentication time"}
    )
    expires_at = fields.DateTime(
        required=True,
        metadata={"description": "sensitive changes need another reauthentication after this"},
    )
    max_age = fields.Integer(required=True, metadata={"description": "REAUTH_MAX_AGE, seconds"})


class SessionOut(Schema):
    id = fields.UUID(required=True)
    created_at = fields.DateTime(required=True)
    last_used_at = fields.DateTime(required=True)
    expires_at = fields.DateTime(
        required=True, metadata={"description": "absolute end, whatever the activity"}
    )
    idle_expires_at = fields.DateTime(
        required=True,
        metadata={"description": "end unless a refresh token is exchanged before it"},
    )
    remember_me = fields.Boolean(required=True)
    ip = fields.String(allow_none=True)
    user_agent = fields.String(allow_none=True)
    current = fields.Boolean(required=True)
    client_id = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "the OAuth client the session belongs to; null for the API's"},
    )
    client_name = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "that client's name, as users see it; null for the API's"},
    )


class SessionListOut(Schema):
    items = fields.List(fields.Nested(SessionOut), required=True)


class RevokedOut(Schema):
    revoked = fields.Integer(required=True)
