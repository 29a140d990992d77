"""Request and response bodies of /api/v1/auth/mfa."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from webapp.schemas import StrictSchema

TotpCode = fields.String(
    required=True, validate=validate.Regexp(r"^[0-9]{6}$"), metadata={"description": "6 digits"}
)


class MfaStatusOut(Schema):
    totp = fields.String(required=True, validate=validate.OneOf(("disabled", "pending", "enabled")))
    enabled_at = fields.DateTime(allow_none=True)
    recovery_codes_remaining = fields.Integer(required=True)


class TotpEnrolmentOut(Schema):
    secret = fields.String(required=True, metadata={"description": "base32; shown once"})
    otpauth_uri = fields.String(
        required=True, metadata={"description": "`otpauth://totp/...` for a QR code"}
    )
    digits = fields.Integer(required=True)
    period = fields.Integer(required=True, metadata={"description": "seconds"})
    algorithm = fields.String(required=True)


class TotpConfirmIn(StrictSchema):
    code = TotpCode


class RecoveryCodesOut(Schema):
    recovery_codes = fields.List(
        fields.String(),
        required=True,
        metadata={"description": "Single-use codes for a lost device. Shown once: store them."},
    )


class TotpDisableIn(StrictSchema):
    code = fields.String(validate=validate.Regexp(r"^[0-9]{6}$"))
    password = fields.String(validate=validate.Length(min=1, max=1024))

    @validates_schema
    def _one_proof(self, data: dict[str, object], **_: object) -> None:
        if ("code" in data) == ("password" in data):
            raise ValidationError("send either code or password", "code")
