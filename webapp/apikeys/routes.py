"""/api/v1/api-keys: the caller's own API keys. Thin views — parse, call the service, serialize.

Managed with a signed-in session only (`@authenticated` refuses API keys): a key cannot mint,
rotate or revoke keys. Minting and rotating also need a recent authentication
(`@requires_recent_auth`): a stolen access token alone must not buy a credential that outlives it.
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import Response, url_for
from flask.views import MethodView
from flask_smorest import Blueprint

from webapp.apikeys import service
from webapp.apikeys.models import ApiKey
from webapp.apikeys.schemas import (
    ApiKeyCreateIn,
    ApiKeyListArgs,
    ApiKeyOut,
    ApiKeyPageOut,
    ApiKeySecretOut,
)
from webapp.db import utcnow
from webapp.extensions import db
from webapp.http.access import authenticated, current_principal, requires_recent_auth
from webapp.http.etag import if_match_header, not_modified
from webapp.http.idempotency import idempotent_sensitive
from webapp.http.origin import request_origin
from webapp.http.pagination import link_header

blp = Blueprint(
    "api_keys",
    __name__,
    url_prefix="/api/v1/api-keys",
    description="API keys: machine credentials acting as their owner within scopes.",
)


def _out(key: ApiKey, plaintext: str | None = None) -> dict[str, Any]:
    body = {
        "id": key.id,
        "name": key.name,
        "prefix": service.visible_prefix(key),
        "scopes": key.scopes,
        "status": service.status_of(key),
        "created_at": key.created_at,
        "expires_at": key.expires_at,
        "rotated_at": key.rotated_at,
        "revoked_at": key.revoked_at,
        "previous_secret_expires_at": (
            key.previous_expires_at
            if key.previous_expires_at and key.previous_expires_at > utcnow()
            else None
        ),
        "last_used_at": key.last_used_at,
        "last_used_ip": key.last_used_ip,
    }
    if plaintext is not None:
        body["key"] = plaintext
    return body


@blp.route("/")
class ApiKeys(MethodView):
    @authenticated
    @blp.arguments(ApiKeyListArgs, location="query", as_kwargs=True)
    @blp.response(200, ApiKeyPageOut)
    def get(self, **args: Any) -> tuple[dict[str, Any], int, dict[str, str]]:
        """The caller's API keys (never their secrets), newest first; filter `status`."""
        page = service.list_keys(db.session, current_principal().user_id, **args)
        body = page.body()
        body["items"] = [_out(key) for key in body["items"]]
        return body, 200, link_header(page)

    @authenticated
    @requires_recent_auth
    @idempotent_sensitive
    @blp.arguments(ApiKeyCreateIn)
    @blp.response(201, ApiKeySecretOut)
    def post(self, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Create a key; the response holds the full key, shown this once. Scopes must be
        permissions usable by API keys that the caller's role holds. Honours Idempotency-Key.
        Needs a recent authentication; the owner is emailed."""
        issued = service.create_key(db.session, request_origin(), current_principal(), **body)
        location = url_for("api_keys.ApiKeyById", key_id=issued.key.id)
        headers = {"Location": location, "ETag": service.etag_of(issued.key)}
        return _out(issued.key, issued.plaintext), 201, headers


@blp.route("/<uuid:key_id>")
class ApiKeyById(MethodView):
    @authenticated
    @blp.response(200, ApiKeyOut)
    def get(self, key_id: uuid.UUID) -> Any:
        """One of the caller's keys (never its secret), with an ETag."""
        key = service.get_key(db.session, current_principal().user_id, key_id)
        etag = service.etag_of(key)
        if not_modified(etag):
            return Response(status=304, headers={"ETag": etag})
        return _out(key), 200, {"ETag": etag}

    @authenticated
    @blp.response(204)
    def delete(self, key_id: uuid.UUID) -> None:
        """Revoke a key: it stops working on the next request (its old secret too).
        Honours If-Match."""
        service.revoke_key(
            db.session,
            request_origin(),
            current_principal().user_id,
            key_id,
            if_match=if_match_header(),
        )


@blp.route("/<uuid:key_id>/rotate")
class ApiKeyRotation(MethodView):
    @authenticated
    @requires_recent_auth
    @blp.response(200, ApiKeySecretOut)
    def post(self, key_id: uuid.UUID) -> dict[str, Any]:
        """A new secret for the key, shown this once; the old secret keeps working for
        `API_KEY_ROTATION_GRACE` seconds (see `previous_secret_expires_at`)."""
        issued = service.rotate_key(
            db.session,
            request_origin(),
            current_principal().user_id,
            key_id,
            if_match=if_match_header(),
        )
        return _out(issued.key, issued.plaintext)
