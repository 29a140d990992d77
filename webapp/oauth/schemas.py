"""Request and response bodies of /api/v1/oauth/clients (RFC 7591 field names)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from webapp.http.pagination import ListArgs, page_schema
from webapp.oauth.metadata import AUTH_METHODS, GRANT_TYPES, MAX_URIS, RESPONSE_TYPES
from webapp.schemas import StrictSchema


def _uri() -> fields.String:
    return fields.String(validate=validate.Length(min=1, max=2000))


class OAuthClientUpdateIn(StrictSchema):
    client_name = fields.String(validate=validate.Length(min=1, max=100))
    redirect_uris = fields.List(
        _uri(),
        validate=validate.Length(max=MAX_URIS),
        metadata={
            "description": "Exact absolute URLs (https; http only for localhost, 127.0.0.1, "
            "[::1]); no wildcards, no fragments."
        },
    )
    post_logout_redirect_uris = fields.List(_uri(), validate=validate.Length(max=MAX_URIS))
    grant_types = fields.List(
        fields.String(validate=validate.OneOf(GRANT_TYPES)),
        validate=validate.Length(min=1, max=len(GRANT_TYPES)),
    )
    response_types = fields.List(
        fields.String(validate=validate.OneOf(RESPONSE_TYPES)),
        metadata={"description": '`["code"]` with authorization_code, else empty (default).'},
    )
    scope = fields.String(
        validate=validate.Length(max=200),
        metadata={"description": "Space-separated: `openid`, `profile`, `email`."},
    )
    token_endpoint_auth_method = fields.String(validate=validate.OneOf(AUTH_METHODS))
    first_party = fields.Boolean(
        metadata={"description": "A client of the operator's own: consent is not asked."}
    )


class OAuthClientCreateIn(OAuthClientUpdateIn):
    client_name = fields.String(required=True, validate=validate.Length(min=1, max=100))


class OAuthClientOut(Schema):
    id = fields.UUID(required=True)
    client_id = fields.String(required=True)
    client_name = fields.String(required=True)
    redirect_uris = fields.List(fields.String(), required=True)
    post_logout_redirect_uris = fields.List(fields.String(), required=True)
    grant_types = fields.List(fields.String(), required=True)
    response_types = fields.List(fields.String(), required=True)
    scope = fields.String(required=True)
    token_endpoint_auth_method = fields.String(required=True)
    first_party = fields.Boolean(required=True)
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)
    secret_rotated_at = fields.DateTime(allow_none=True)
    previous_secret_expires_at = fields.DateTime(
        allow_none=True,
        metadata={"description": "After a rotation: until when the old secret still works."},
    )


class OAuthClientSecretOut(OAuthClientOut):
    client_secret = fields.String(
        allow_none=True,
        metadata={
            "description": "Shown only in this response: store it now. Null for a public "
            "client (`token_endpoint_auth_method` `none`)."
        },
    )


OAuthClientPageOut = page_schema(OAuthClientOut, "OAuthClientPage")


class OAuthClientListArgs(ListArgs):
    pass
