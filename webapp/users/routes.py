"""/api/v1/users: thin views — parse, call `webapp.users.service`, serialize."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Response, current_app, json, url_for
from flask.views import MethodView
from flask_smorest import Blueprint

from webapp.auth import email_change
from webapp.auth.state import Principal
from webapp.extensions import db
from webapp.http.access import authenticated, current_principal, requires, requires_recent_auth
from webapp.http.etag import if_match_header, not_modified
from webapp.http.idempotency import idempotent
from webapp.http.origin import request_origin
from webapp.http.pagination import link_header
from webapp.mfa import service as mfa
from webapp.users import service
from webapp.users.models import User
from webapp.users.schemas import (
    EmailChangeIn,
    MePatchIn,
    RoleIn,
    UserCreateIn,
    UserListArgs,
    UserOut,
    UserPageOut,
    UserPatchIn,
    UserPutIn,
)
from webapp.versions import etag_value

blp = Blueprint("users", __name__, url_prefix="/api/v1/users", description="User accounts.")

Result = tuple[Any, int, dict[str, str]] | Response


def _with_etag(user: User, status: int = 200) -> tuple[User, int, dict[str, str]]:
    return user, status, {"ETag": service.etag_of(user)}


ME_FIELDS = tuple(UserOut().fields)


def _snapshot_out(principal: Principal) -> Result:
    """/users/me from the auth cache: no database read on the hottest authenticated path."""
    snapshot = principal.user
    etag = etag_value(snapshot["id"], snapshot["version"])
    if not_modified(etag):
        return Response(status=304, headers={"ETag": etag})
    # The snapshot is already the JSON form of UserOut (same fields, ISO timestamps): serve it
    # as is rather than round-trip it through marshmallow on the hottest authenticated path.
    body = {field: snapshot[field] for field in ME_FIELDS}
    return current_app.response_class(
        json.dumps(body), mimetype="application/json", headers={"ETag": etag}
    )


@blp.route("/me")
class Me(MethodView):
    @authenticated
    @blp.response(200, UserOut)
    def get(self) -> Result:
        """The caller's own account (with an ETag)."""
        return _snapshot_out(current_principal())

    @authenticated
    @blp.arguments(MePatchIn)
    @blp.response(200, UserOut)
    def patch(self, body: dict[str, Any]) -> Result:
        """Update the caller's own account; honours If-Match."""
        principal = current_principal()
        user = service.update_user(
            db.session,
            request_origin(),
            principal,
            principal.user_id,
            body,
            if_match=if_match_header(),
        )
        return _with_etag(user)


@blp.route("/me/email")
class MyEmail(MethodView):
    @authenticated
    @requires_recent_auth
    @blp.arguments(EmailChangeIn)
    @blp.response(202)
    def post(self, body: dict[str, Any]) -> None:
        """Change the caller's sign-in email: a link goes to the new address, which becomes the
        login once confirmed through `POST /auth/verify-email`; the old address is told then.
        409 if another account holds it, 429 within a minute of the previous request."""
        principal = current_principal()
        email_change.request_email_change(
            db.session, request_origin(), principal.user_id, body["email"]
        )


@blp.route("/")
class Users(MethodView):
    @requires("users:list")
    @blp.arguments(UserListArgs, location="query", as_kwargs=True)
    @blp.response(200, UserPageOut)
    def get(self, **args: Any) -> Result:
        """List users: filters `email`, `role`, `active`, `created_after`, `created_before`;
        `sort` (created_at, email, name; `-` for descending); cursor or offset pagination."""
        page = service.list_users(**args)
        headers = link_header(page)
        return page.body(), 200, headers

    @requires("users:create")
    @idempotent
    @blp.arguments(UserCreateIn)
    @blp.response(201, UserOut)
    def post(self, body: dict[str, Any]) -> Result:
        """Create a user: with a password it starts verified; without one it is an invitation
        (the only kind an API key may create). Honours Idempotency-Key."""
        user = service.create_user(db.session, request_origin(), **body)
        return (
            user,
            201,
            {
                "Location": url_for("users.UserById", user_id=user.id),
                "ETag": service.etag_of(user),
            },
        )


@blp.route("/<uuid:user_id>")
class UserById(MethodView):
    @requires("users:read", owner="user_id")
    @blp.response(200, UserOut)
    def get(self, user_id: uuid.UUID) -> Result:
        """One user (yourself, or anyone for administrators), with an ETag."""
        user = service.get_user(db.session, user_id)
        etag = service.etag_of(user)
        if not_modified(etag):
            return Response(status=304, headers={"ETag": etag})
        return _with_etag(user)

    @requires("users:update", owner="user_id")
    @blp.arguments(UserPatchIn)
    @blp.response(200, UserOut)
    def patch(self, body: dict[str, Any], user_id: uuid.UUID) -> Result:
        """Partial update; `active` is for administrators. Honours If-Match."""
        user = service.update_user(
            db.session,
            request_origin(),
            current_principal(),
            user_id,
            body,
            if_match=if_match_header(),
        )
        return _with_etag(user)

    @requires("users:replace")
    @blp.arguments(UserPutIn)
    @blp.response(200, UserOut)
    def put(self, body: dict[str, Any], user_id: uuid.UUID) -> Result:
        """Replace a user's editable fields (administrators). Honours If-Match."""
        user = service.replace_user(
            db.session, request_origin(), user_id, body, if_match=if_match_header()
        )
        return _with_etag(user)

    @requires("users:delete")
    @blp.response(204)
    def delete(self, user_id: uuid.UUID) -> None:
        """Delete a user; their audit events remain. Honours If-Match."""
        service.delete_user(db.session, request_origin(), user_id, if_match=if_match_header())


@blp.route("/<uuid:user_id>/role")
class UserRole(MethodView):
    @requires("users:role")
    @blp.arguments(RoleIn)
    @blp.response(200, UserOut)
    def put(self, body: dict[str, Any], user_id: uuid.UUID) -> Result:
        """Change a user's role; effective on the user's next request."""
        user = service.change_role(
            db.session, request_origin(), user_id, body["role"], if_match=if_match_header()
        )
        return _with_etag(user)


@blp.route("/<uuid:user_id>/mfa")
class UserMfa(MethodView):
    @requires("users:mfa-reset")
    @blp.response(204)
    def delete(self, user_id: uuid.UUID) -> None:
        """Reset a user's second factor (a lost device): TOTP and recovery codes are removed;
        the user signs in with the password alone until they enrol again. Audited."""
        mfa.reset(db.session, request_origin(), user_id)
