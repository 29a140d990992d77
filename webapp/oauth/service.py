"""OAuth client administration: register, list, read, update, rotate the secret, delete.

Every write is audited (never with a secret) and takes its own unit of work. The secret of a
confidential client exists in plain text only in the result of `create_client` and
`rotate_secret`; a public client (`token_endpoint_auth_method` `none`) has none.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from webapp.audit import service as audit
from webapp.config import current_settings
from webapp.context import Origin
from webapp.db import DbSession, utcnow
from webapp.errors import Conflict, NotFound, ValidationFailed
from webapp.oauth import credentials, metadata
from webapp.oauth.models import PUBLIC, OAuthClient
from webapp.paging import Page, paginate
from webapp.versions import etag_value, require_match

METADATA_FIELDS = (
    "client_name",
    "redirect_uris",
    "post_logout_redirect_uris",
    "grant_types",
    "response_types",
    "scope",
    "token_endpoint_auth_method",
    "first_party",
)
DEFAULTS: dict[str, Any] = {
    "redirect_uris": [],
    "post_logout_redirect_uris": [],
    "grant_types": [metadata.AUTHORIZATION_CODE],
    "response_types": None,
    "scope": "",
    "token_endpoint_auth_method": "client_secret_basic",
    "first_party": False,
}


@dataclass(frozen=True)
class IssuedClient:
    """A client as created or rotated: the row, and the only time its secret exists."""

    client: OAuthClient
    client_secret: str | None


def etag_of(client: OAuthClient) -> str:
    return etag_value(client.id, client.version)


def _summary(client: OAuthClient) -> dict[str, Any]:
    """What audit events record of a client: its metadata, never a secret or a hash."""
    return {
        "client_id": client.client_id,
        **{field: getattr(client, field) for field in METADATA_FIELDS},
    }


def create_client(db: DbSession, origin: Origin, **fields: Any) -> IssuedClient:
    values = metadata.check({**DEFAULTS, **fields})
    client_id = credentials.new_client_id()
    secret = None if values["token_endpoint_auth_method"] == PUBLIC else credentials.new_secret()
    client = OAuthClient(
        client_id=client_id,
        secret_hash=credentials.hash_secret(client_id, secret) if secret else None,
        **{**values, "client_name": values["client_name"].strip()},
    )
    db.add(client)
    db.flush()
    audit.record(
        db,
        origin,
        "oauth_client.created",
        target_type="oauth_client",
        target_id=client.id,
        **_summary(client),
    )
    db.commit()
    return IssuedClient(client, secret)


def list_clients(
    db: DbSession,
    *,
    limit: int,
    cursor: str | None = None,
    offset: int | None = None,
    sort: str | None = None,
) -> Page:
    return paginate(
        db,
        select(OAuthClient),
        id_column=OAuthClient.id,
        sort_columns={"created_at": OAuthClient.created_at, "client_name": OAuthClient.client_name},
        sort=sort,
        default_sort="-created_at",
        limit=limit,
        cursor=cursor,
        offset=offset,
    )


def _load(db: DbSession, client_pk: uuid.UUID, *, for_update: bool = False) -> OAuthClient:
    query = select(OAuthClient).where(OAuthClient.id == client_pk)
    client = db.scalar(query.with_for_update() if for_update else query)
    if client is None:
        raise NotFound("No such OAuth client.")
    return client


def get_client(db: DbSession, client_pk: uuid.UUID) -> OAuthClient:
    return _load(db, client_pk)


def find_by_client_id(db: DbSession, client_id: str) -> OAuthClient | None:
    """The client a protocol request names by its public `client_id`, or None."""
    return db.scalar(select(OAuthClient).where(OAuthClient.client_id == client_id))


def update_client(
    db: DbSession,
    origin: Origin,
    client_pk: uuid.UUID,
    changes: dict[str, Any],
    *,
    if_match: str | None = None,
) -> OAuthClient:
    """Change metadata; the result is checked as a whole. A client cannot change between public
    and confidential (a secret would appear or vanish under its users): register a new one."""
    client = _load(db, client_pk, for_update=True)
    require_match(if_match, etag_of(client))
    current = {field: getattr(client, field) for field in METADATA_FIELDS}
    merged = {**current, **changes}
    if "grant_types" in changes and "response_types" not in changes:
        merged["response_types"] = None  # follows the new grant types
    if (merged["token_endpoint_auth_method"] == PUBLIC) != client.is_public:
        raise ValidationFailed(
            "A client cannot change between public and confidential; register a new client.",
            slug=metadata.SLUG,
            errors={"token_endpoint_auth_method": ["cannot change to or from none"]},
        )
    values = metadata.check(merged)
    if "client_name" in changes:
        values["client_name"] = values["client_name"].strip()
    changed = sorted(f for f in METADATA_FIELDS if values[f] != current[f])
    if not changed:
        return client
    for field in changed:
        setattr(client, field, values[field])
    client.version += 1
    client.updated_at = utcnow()
    audit.record(
        db,
        origin,
        "oauth_client.updated",
        target_type="oauth_client",
        target_id=client.id,
        client_id=client.client_id,
        changed=changed,
    )
    db.commit()
    return client


def rotate_secret(
    db: DbSession, origin: Origin, client_pk: uuid.UUID, *, if_match: str | None = None
) -> IssuedClient:
    """A new secret; the current one stays valid for OAUTH_CLIENT_SECRET_ROTATION_GRACE seconds
    (a second rotation inside the overlap ends the first old secret at once)."""
    client = _load(db, client_pk, for_update=True)
    require_match(if_match, etag_of(client))
    if client.is_public:
        raise Conflict("A public client has no secret to rotate.", slug="oauth-client-public")
    now = utcnow()
    grace = current_settings().oauth_client_secret_rotation_grace
    old_valid_until = now + timedelta(seconds=grace) if grace else None
    secret = credentials.new_secret()
    client.previous_secret_hash = client.secret_hash if grace else None
    client.previous_secret_expires_at = old_valid_until
    client.secret_hash = credentials.hash_secret(client.client_id, secret)
    client.secret_rotated_at = now
    client.version += 1
    client.updated_at = now
    audit.record(
        db,
        origin,
        "oauth_client.secret_rotated",
        target_type="oauth_client",
        target_id=client.id,
        client_id=client.client_id,
        old_secret_valid_until=old_valid_until.isoformat() if old_valid_until else None,
    )
    db.commit()
    return IssuedClient(client, secret)


def delete_client(
    db: DbSession, origin: Origin, client_pk: uuid.UUID, *, if_match: str | None = None
) -> None:
    """Remove the client and (by cascade) its unused authorization codes."""
    client = _load(db, client_pk, for_update=True)
    require_match(if_match, etag_of(client))
    audit.record(
        db,
        origin,
        "oauth_client.deleted",
        target_type="oauth_client",
        target_id=client.id,
        client_id=client.client_id,
        client_name=client.client_name,
    )
    db.delete(client)
    db.commit()


def previous_secret_valid_until(
    client: OAuthClient, now: datetime | None = None
) -> datetime | None:
    deadline = client.previous_secret_expires_at
    if client.previous_secret_hash is None or deadline is None or deadline <= (now or utcnow()):
        return None
    return deadline
