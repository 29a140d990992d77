"""/api/v1/oauth/clients (administrators), the provider's discovery document and its token,
revocation, introspection and UserInfo endpoints. Thin views — parse, call the service (or
Authlib's server), serialize.

Client management needs `oauth-clients:manage` (administrators; never an API key: a client secret
is a credential that would outlive the key). Creating a client and rotating its secret also need
a recent authentication, as minting an API key does.
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint as FlaskBlueprint
from flask import Response, jsonify, url_for
from flask.views import MethodView
from flask_smorest import Blueprint

from webapp.auth.tokens import keyring
from webapp.config import current_settings
from webapp.extensions import db, limiter
from webapp.http.access import requires, requires_recent_auth
from webapp.http.bearer import bearer_token
from webapp.http.etag import if_match_header, not_modified
from webapp.http.idempotency import idempotent_sensitive
from webapp.http.origin import request_origin
from webapp.http.pagination import link_header
from webapp.http.ratelimit import ip_key
from webapp.oauth import discovery, server, service, token_state
from webapp.oauth.models import OAuthClient
from webapp.oauth.schemas import (
    OAuthClientCreateIn,
    OAuthClientListArgs,
    OAuthClientOut,
    OAuthClientPageOut,
    OAuthClientSecretOut,
    OAuthClientUpdateIn,
)

MANAGE = "oauth-clients:manage"

blp = Blueprint(
    "oauth_clients",
    __name__,
    url_prefix="/api/v1/oauth/clients",
    description="OAuth 2.1 / OpenID Connect clients (RFC 7591 metadata), for administrators.",
)
provider_bp = FlaskBlueprint("oauth_provider", __name__)
authorization_server = server.build(request_origin)
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _out(client: OAuthClient, issued: service.IssuedClient | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": client.id,
        "client_id": client.client_id,
        **{field: getattr(client, field) for field in service.METADATA_FIELDS},
        "created_at": client.created_at,
        "updated_at": client.updated_at,
        "secret_rotated_at": client.secret_rotated_at,
        "previous_secret_expires_at": service.previous_secret_valid_until(client),
    }
    if issued is not None:
        body["client_secret"] = issued.client_secret
    return body


@blp.route("/")
class OAuthClients(MethodView):
    @requires(MANAGE)
    @blp.arguments(OAuthClientListArgs, location="query", as_kwargs=True)
    @blp.response(200, OAuthClientPageOut)
    def get(self, **args: Any) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Registered clients (never their secrets), newest first."""
        page = service.list_clients(db.session, **args)
        body = page.body()
        body["items"] = [_out(client) for client in body["items"]]
        return body, 200, link_header(page)

    @requires(MANAGE)
    @requires_recent_auth
    @idempotent_sensitive
    @blp.arguments(OAuthClientCreateIn)
    @blp.response(201, OAuthClientSecretOut)
    def post(self, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Register a client. A confidential client's `client_secret` is in this response only.
        Honours Idempotency-Key. Needs a recent authentication."""
        issued = service.create_client(db.session, request_origin(), **body)
        location = url_for("oauth_clients.OAuthClientById", client_pk=issued.client.id)
        headers = {"Location": location, "ETag": service.etag_of(issued.client)}
        return _out(issued.client, issued), 201, headers


@blp.route("/<uuid:client_pk>")
class OAuthClientById(MethodView):
    @requires(MANAGE)
    @blp.response(200, OAuthClientOut)
    def get(self, client_pk: uuid.UUID) -> Any:
        """One client (never its secret), with an ETag."""
        client = service.get_client(db.session, client_pk)
        etag = service.etag_of(client)
        if not_modified(etag):
            return Response(status=304, headers={"ETag": etag})
        return _out(client), 200, {"ETag": etag}

    @requires(MANAGE)
    @blp.arguments(OAuthClientUpdateIn)
    @blp.response(200, OAuthClientOut)
    def patch(self, changes: dict[str, Any], client_pk: uuid.UUID) -> Any:
        """Change metadata; the whole result must be valid. Honours If-Match."""
        client = service.update_client(
            db.session, request_origin(), client_pk, changes, if_match=if_match_header()
        )
        return _out(client), 200, {"ETag": service.etag_of(client)}

    @requires(MANAGE)
    @blp.response(204)
    def delete(self, client_pk: uuid.UUID) -> None:
        """Delete a client: its secret and pending codes stop working at once. Honours If-Match."""
        service.delete_client(db.session, request_origin(), client_pk, if_match=if_match_header())


@blp.route("/<uuid:client_pk>/rotate-secret")
class OAuthClientSecretRotation(MethodView):
    @requires(MANAGE)
    @requires_recent_auth
    @blp.response(200, OAuthClientSecretOut)
    def post(self, client_pk: uuid.UUID) -> Any:
        """A new secret, shown this once; the old one keeps working for
        `OAUTH_CLIENT_SECRET_ROTATION_GRACE` seconds (see `previous_secret_expires_at`).
        A public client has no secret (409)."""
        issued = service.rotate_secret(
            db.session, request_origin(), client_pk, if_match=if_match_header()
        )
        return _out(issued.client, issued), 200, {"ETag": service.etag_of(issued.client)}


@provider_bp.get("/.well-known/openid-configuration")
@limiter.exempt
def openid_configuration() -> Response:
    ring = keyring()
    algs = [key.alg for key in (ring.signing_key, ring.next_key) if key is not None]
    response = jsonify(discovery.document(current_settings(), list(dict.fromkeys(algs))))
    response.headers["Cache-Control"] = f"public, max-age={current_settings().jwks_max_age}"
    return response


def _token_limit() -> str:
    return current_settings().ratelimit_oauth_token


@provider_bp.post("/oauth/token")
@limiter.limit(_token_limit, key_func=ip_key)
def token() -> Response:
    """RFC 6749 §3.2: `grant_type` `authorization_code`, `refresh_token` or
    `client_credentials` (form-encoded), the client authenticated by its registered method;
    answers and errors in OAuth's JSON format, never cached."""
    response: Response = authorization_server.create_token_response()
    return response


@provider_bp.post("/oauth/revoke")
def revoke() -> Response:
    """RFC 7009: a confidential client revokes one of its tokens (and with it the session)."""
    response: Response = authorization_server.create_endpoint_response("revocation")
    return response


@provider_bp.post("/oauth/introspect")
def introspect() -> Response:
    """RFC 7662: a confidential client asks whether one of its tokens is active."""
    response: Response = authorization_server.create_endpoint_response("introspection")
    return response


def _bearer_error(status: int, error: str | None, description: str) -> Response:
    """RFC 6750 §3: the challenge names the error (none when no token was sent at all)."""
    challenge = f'Bearer error="{error}"' if error else "Bearer"
    body = {"error": error or "invalid_request", "error_description": description}
    response = jsonify(body)
    response.status_code = status
    response.headers.update({**NO_STORE, "WWW-Authenticate": challenge})
    return response


@provider_bp.errorhandler(429)
def rate_limited(_exc: Exception) -> Response:
    """A spent budget at the provider's endpoints, in OAuth's JSON (what OAuth client libraries
    parse), not problem+json. RFC 6749 has no rate-limit error; `temporarily_unavailable` is
    its word for "not now, retry later". `Retry-After` is added by the rate-limit layer."""
    response = jsonify(
        {
            "error": "temporarily_unavailable",
            "error_description": "Too many requests from your address; retry after Retry-After "
            "seconds.",
        }
    )
    response.status_code = 429
    response.headers.update(NO_STORE)
    return response


@provider_bp.route("/oauth/userinfo", methods=["GET", "POST"])
def userinfo() -> Response:
    """OpenID Connect Core §5.3: the claims of the user an access token (with `openid`, sent
    as `Authorization: Bearer`) was issued for."""
    token = bearer_token()
    if token is None:
        return _bearer_error(401, None, "Send the access token as a bearer token.")
    try:
        claims = token_state.userinfo(db.session, token)
    except token_state.InvalidAccessToken as exc:
        return _bearer_error(401, "invalid_token", str(exc))
    except token_state.InsufficientScope as exc:
        return _bearer_error(403, "insufficient_scope", str(exc))
    response = jsonify(claims)
    response.headers.update(NO_STORE)
    return response
