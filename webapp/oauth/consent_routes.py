"""/api/v1/users/me/oauth-consents: the applications a user allowed to sign them in, and the
scopes each may ask for; revoking one makes the consent page appear again at that client's next
request. Thin views over `webapp.oauth.consents`; the caller's own consents only."""

from __future__ import annotations

import uuid
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from webapp.extensions import db
from webapp.http.access import authenticated, current_principal
from webapp.http.origin import request_origin
from webapp.oauth import consents

blp = Blueprint(
    "oauth_consents",
    __name__,
    url_prefix="/api/v1/users/me/oauth-consents",
    description="The applications (OAuth clients) the caller allowed, and what they may ask.",
)


class OAuthConsentOut(Schema):
    id = fields.UUID(required=True)
    client_id = fields.String(required=True)
    client_name = fields.String(required=True)
    scope = fields.String(required=True, metadata={"description": "Space-separated scopes."})
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)


class OAuthConsentListOut(Schema):
    items = fields.List(fields.Nested(OAuthConsentOut), required=True)


@blp.route("/")
class OAuthConsents(MethodView):
    @authenticated
    @blp.response(200, OAuthConsentListOut)
    def get(self) -> dict[str, Any]:
        """The caller's consents, newest first."""
        views = consents.list_consents(db.session, current_principal().user_id)
        return {
            "items": [
                {
                    "id": v.consent.id,
                    "client_id": v.client.client_id,
                    "client_name": v.client.client_name,
                    "scope": v.consent.scope,
                    "created_at": v.consent.created_at,
                    "updated_at": v.consent.updated_at,
                }
                for v in views
            ]
        }


@blp.route("/<uuid:consent_id>")
class OAuthConsentById(MethodView):
    @authenticated
    @blp.response(204)
    def delete(self, consent_id: uuid.UUID) -> None:
        """Revoke one of the caller's consents (`oauth_consent.revoked`); the client's next
        authorization request asks again."""
        principal = current_principal()
        consents.revoke(db.session, request_origin(), principal.user_id, consent_id)
