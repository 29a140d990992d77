"""Request and response bodies of /api/v1/users."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from webapp.http.pagination import ListArgs, page_schema
from webapp.schemas import StrictSchema
from webapp.security.rbac import ROLES


class UserOut(Schema):
    id = fields.UUID(required=True)
    email = fields.String(required=True)
    name = fields.String(required=True)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    active = fields.Boolean(required=True)
    email_verified = fields.Boolean(required=True)
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)


UserPageOut = page_schema(UserOut, "UserPage")


class UserListArgs(ListArgs):
    email = fields.String(
        validate=validate.Length(max=320), metadata={"description": "case-insensitive substring"}
    )
    role = fields.String(validate=validate.OneOf(ROLES))
    active = fields.Boolean()
    created_after = fields.AwareDateTime(default_timezone=None)
    created_before = fields.AwareDateTime(default_timezone=None)


class UserCreateIn(StrictSchema):
    email = fields.Email(required=True, validate=validate.Length(max=320))
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    password = fields.String(
        validate=validate.Length(min=1, max=1024),
        metadata={
            "description": "Omitted: an invitation (no password, unconfirmed address; the owner "
            "gets the links to confirm it and set a password). Never with an API key."
        },
    )
    role = fields.String(
        validate=validate.OneOf(ROLES),
        metadata={"description": "Default `user`. Never with an API key (403)."},
    )


class MePatchIn(StrictSchema):
    name = fields.String(validate=validate.Length(min=1, max=200))


class EmailChangeIn(StrictSchema):
    email = fields.Email(
        required=True,
        validate=validate.Length(max=320),
        metadata={"description": "the new sign-in email; it takes effect once confirmed"},
    )


class UserPatchIn(StrictSchema):
    name = fields.String(validate=validate.Length(min=1, max=200))
    active = fields.Boolean(metadata={"description": "administrators only"})


class UserPutIn(StrictSchema):
    email = fields.Email(required=True, validate=validate.Length(max=320))
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    active = fields.Boolean(required=True)


class RoleIn(StrictSchema):
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
