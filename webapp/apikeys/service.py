"""API key rules: creation, listing, rotation with a grace period, revocation, and authentication.

A key reads `gh_live_<public id>_<secret>`. The public id (64 random bits, hex) finds the row
through a unique index — one indexed lookup whatever the number of keys — and is shown in lists as
the key's visible prefix. The secret (256 random bits, base32) is never stored: only
HMAC-SHA-256(API_KEY_PEPPER, public id ":" secret), compared in constant time. A fast keyed hash is
right here, unlike for passwords: a 256-bit random secret cannot be guessed however fast the hash,
so a slow hash would only cost latency on every request; the pepper (kept outside the database)
means a stolen table alone does not even allow checking a guess, and binding the public id stops a
hash being copied onto another row.

Key state is cached in Redis (written after each commit, filled with SET NX on a miss, like the
session cache), and the owner comes from the user cache: a revoked, rotated-out or expired key and
a deactivated or deleted owner stop working on the next request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select

from webapp.apikeys import usage
from webapp.apikeys.models import ApiKey
from webapp.audit import service as audit
from webapp.auth import notices, state
from webapp.auth.state import Principal
from webapp.config import current_settings
from webapp.context import Origin
from webapp.db import DbSession, utcnow
from webapp.errors import Conflict, NotFound, ValidationFailed
from webapp.extensions import redis_store
from webapp.paging import Page, paginate
from webapp.security import rbac
from webapp.users.models import User
from webapp.versions import require_match

PREFIX = "gh_live_"
PUBLIC_ID_BYTES = 8
SECRET_BYTES = 32
_KEY_FORMAT = re.compile(r"^gh_live_([0-9a-f]{16})_([a-z2-7]{52})$")


@dataclass(frozen=True)
class IssuedKey:
    """A key as created or rotated: the row, and the only time its plaintext exists."""

    key: ApiKey
    plaintext: str


def _pepper() -> bytes:
    return current_settings().effective_api_key_pepper


def hash_secret(public_id: str, secret: str) -> str:
    message = f"{public_id}:{secret}".encode()
    return hmac.new(_pepper(), message, hashlib.sha256).hexdigest()


def _new_secret() -> str:
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode().rstrip("=").lower()


def format_key(public_id: str, secret: str) -> str:
    return f"{PREFIX}{public_id}_{secret}"


def parse_key(presented: str) -> tuple[str, str] | None:
    """(public id, secret) of a well-formed key; None for anything else."""
    match = _KEY_FORMAT.match(presented.strip())
    return (match.group(1), match.group(2)) if match else None


def visible_prefix(key: ApiKey) -> str:
    return f"{PREFIX}{key.public_id}"


def status_of(key: ApiKey, now: datetime | None = None) -> str:
    now = now or utcnow()
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"


# --- the cache of key state ---------------------------------------------------------------------


def _cache_key(public_id: str) -> str:
    return f"gh:apikey:{public_id}"


def _snapshot(key: ApiKey) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": str(key.id),
        "user_id": str(key.user_id),
        "secret_hash": key.secret_hash,
        "previous_secret_hash": key.previous_secret_hash,
        "previous_expires_at": iso(key.previous_expires_at),
        "expires_at": iso(key.expires_at),
        "revoked": key.revoked_at is not None,
        "scopes": list(key.scopes),
    }


def _publish(key: ApiKey) -> None:
    """After a committed change: the next request sees the new state."""
    ttl = current_settings().cache_ttl
    redis_store.set_many(
        {_cache_key(key.public_id): json.dumps(_snapshot(key))}, ttl, critical=True
    )


def _load_state(db: DbSession, public_id: str) -> dict[str, Any] | None:
    cached, _source = redis_store.get_hot([_cache_key(public_id)])
    raw = cached[0] if cached is not None else None
    if raw is not None:
        loaded: dict[str, Any] = json.loads(raw)
        return loaded
    key = db.scalar(select(ApiKey).where(ApiKey.public_id == public_id))
    if key is None:
        return None  # absence is not cached: a key created next must work at once
    snapshot = _snapshot(key)
    if cached is not None:
        ttl = current_settings().cache_ttl
        redis_store.set(_cache_key(public_id), json.dumps(snapshot), ttl, only_if_absent=True)
    return snapshot


def _before(value: str | None, now: datetime) -> bool:
    return value is not None and datetime.fromisoformat(value) <= now


def authenticate(db: DbSession, presented: str, ip: str | None) -> Principal | None:
    """The principal a presented key stands for, or None (unknown, wrong secret, revoked, expired,
    rotated out after the grace period, or an owner who is deactivated or deleted)."""
    parsed = parse_key(presented)
    if parsed is None:
        return None
    public_id, secret = parsed
    snapshot = _load_state(db, public_id)
    if snapshot is None or snapshot["revoked"]:
        return None
    now = utcnow()
    if _before(snapshot["expires_at"], now):
        return None
    digest = hash_secret(public_id, secret)
    matched = hmac.compare_digest(digest, snapshot["secret_hash"])
    previous = snapshot["previous_secret_hash"]
    if not matched and previous and not _before(snapshot["previous_expires_at"], now):
        matched = hmac.compare_digest(digest, previous)
    if not matched:
        return None
    user_id = uuid.UUID(snapshot["user_id"])
    user = state.load_user(db, user_id)
    if user is None:
        return None
    key_id = uuid.UUID(snapshot["id"])
    usage.record_use(key_id, ip)
    return Principal(
        user_id=user_id,
        role=user["role"],
        session_id=None,
        user=user,
        api_key_id=key_id,
        scopes=frozenset(snapshot["scopes"]),
    )


# --- management -------------------------------------------------------------------------------


def _check_scopes(role: str, scopes: list[str]) -> list[str]:
    unknown = [s for s in scopes if s not in rbac.API_KEY_PERMISSIONS]
    if unknown:
        raise ValidationFailed(
            "Some scopes are not usable by API keys.",
            slug="invalid-scope",
            errors={"scopes": [f"not an API key scope: {s}" for s in unknown]},
        )
    beyond = [s for s in scopes if not rbac.holdable(role, s)]
    if beyond:
        raise ValidationFailed(
            "A key cannot hold a permission its owner's role does not.",
            slug="invalid-scope",
            errors={"scopes": [f"your role does not hold {s}" for s in beyond]},
        )
    return sorted(set(scopes))


def _new_public_id(db: DbSession) -> str:
    while True:
        public_id = secrets.token_hex(PUBLIC_ID_BYTES)
        if db.scalar(select(ApiKey.id).where(ApiKey.public_id == public_id)) is None:
            return public_id


def create_key(
    db: DbSession,
    origin: Origin,
    principal: Principal,
    *,
    name: str,
    scopes: list[str],
    expires_at: datetime | None = None,
) -> IssuedKey:
    settings = current_settings()
    scopes = _check_scopes(principal.role, scopes)
    now = utcnow()
    if expires_at is not None and expires_at <= now:
        raise ValidationFailed(
            "The expiry must lie in the future.", errors={"expires_at": ["must be in the future"]}
        )
    active = db.scalar(
        select(func.count())
        .select_from(ApiKey)
        .where(
            ApiKey.user_id == principal.user_id,
            ApiKey.revoked_at.is_(None),
            or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
        )
    )
    if (active or 0) >= settings.api_key_max_per_user:
        raise Conflict(
            f"At most {settings.api_key_max_per_user} active API keys per user; revoke one first.",
            slug="api-key-limit",
        )
    public_id, secret = _new_public_id(db), _new_secret()
    key = ApiKey(
        user_id=principal.user_id,
        name=name.strip(),
        public_id=public_id,
        secret_hash=hash_secret(public_id, secret),
        scopes=scopes,
        expires_at=expires_at,
    )
    db.add(key)
    db.flush()
    audit.record(
        db,
        origin,
        "api_key.created",
        target_type="api_key",
        target_id=key.id,
        name=key.name,
        prefix=visible_prefix(key),
        scopes=scopes,
        expires_at=expires_at.isoformat() if expires_at else None,
    )
    _notify_owner(db, origin, principal.user_id, "api_key_created", key)
    db.commit()
    return IssuedKey(key, format_key(public_id, secret))


def _notify_owner(
    db: DbSession, origin: Origin, user_id: uuid.UUID, event: str, key: ApiKey
) -> None:
    """A key acts as its owner for good: they hear of every new secret (never the secret)."""
    owner = db.get(User, user_id)
    if owner is None:
        return
    notices.notify(
        db,
        origin,
        event,
        recipient=owner.email,
        name=owner.name,
        details=[
            ("Key", f"{key.name} ({visible_prefix(key)}…)"),
            ("Scopes", ", ".join(key.scopes) or "none"),
        ],
    )


def list_keys(
    db: DbSession,
    user_id: uuid.UUID,
    *,
    limit: int,
    cursor: str | None = None,
    offset: int | None = None,
    sort: str | None = None,
    status: str | None = None,
) -> Page:
    """The owner's keys (batched last-use data written first, so the list is current)."""
    usage.flush_usage()
    query = select(ApiKey).where(ApiKey.user_id == user_id)
    now = utcnow()
    if status == "active":
        query = query.where(
            ApiKey.revoked_at.is_(None), or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now)
        )
    elif status == "revoked":
        query = query.where(ApiKey.revoked_at.is_not(None))
    elif status == "expired":
        query = query.where(
            ApiKey.revoked_at.is_(None),
            and_(ApiKey.expires_at.is_not(None), ApiKey.expires_at <= now),
        )
    return paginate(
        db,
        query,
        id_column=ApiKey.id,
        sort_columns={"created_at": ApiKey.created_at, "name": ApiKey.name},
        sort=sort,
        default_sort="-created_at",
        limit=limit,
        cursor=cursor,
        offset=offset,
    )


def etag_of(key: ApiKey) -> str:
    """A strong ETag over everything the representation shows that can change."""
    material = "|".join(
        str(v) for v in (key.id, key.rotated_at, key.revoked_at, key.last_used_at, key.last_used_ip)
    )
    return f'"{hashlib.sha256(material.encode()).hexdigest()[:32]}"'


def _owned(
    db: DbSession, user_id: uuid.UUID, key_id: uuid.UUID, *, for_update: bool = True
) -> ApiKey:
    """The caller's key (locked for a change); another user's key is 404 (not 403), so ids
    reveal nothing."""
    query = select(ApiKey).where(ApiKey.id == key_id)
    key = db.scalar(query.with_for_update() if for_update else query)
    if key is None or key.user_id != user_id:
        raise NotFound("No such API key.")
    return key


def get_key(db: DbSession, user_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey:
    usage.flush_usage()
    return _owned(db, user_id, key_id, for_update=False)


def revoke_key(
    db: DbSession,
    origin: Origin,
    user_id: uuid.UUID,
    key_id: uuid.UUID,
    *,
    if_match: str | None = None,
) -> None:
    key = _owned(db, user_id, key_id)
    require_match(if_match, etag_of(key))
    if key.revoked_at is None:
        mark_revoked(db, origin, key)
    db.commit()
    _publish(key)


def mark_revoked(db: DbSession, origin: Origin, key: ApiKey, *, reason: str | None = None) -> None:
    """Revoke `key` (its previous secret too) in the caller's unit of work, audited."""
    key.revoked_at = utcnow()
    key.previous_secret_hash = None
    key.previous_expires_at = None
    audit.record(
        db,
        origin,
        "api_key.revoked",
        target_type="api_key",
        target_id=key.id,
        prefix=visible_prefix(key),
        reason=reason,
    )


def rotate_key(
    db: DbSession,
    origin: Origin,
    user_id: uuid.UUID,
    key_id: uuid.UUID,
    *,
    if_match: str | None = None,
) -> IssuedKey:
    """A new secret; the current one stays valid for API_KEY_ROTATION_GRACE seconds (a second
    rotation inside the grace period ends the first old secret at once)."""
    key = _owned(db, user_id, key_id)
    require_match(if_match, etag_of(key))
    now = utcnow()
    if status_of(key, now) != "active":
        raise Conflict("A revoked or expired key cannot be rotated.", slug="api-key-inactive")
    grace = current_settings().api_key_rotation_grace
    secret = _new_secret()
    key.previous_secret_hash = key.secret_hash if grace else None
    old_valid_until = now + timedelta(seconds=grace) if grace else None
    key.previous_expires_at = old_valid_until
    key.secret_hash = hash_secret(key.public_id, secret)
    key.rotated_at = now
    audit.record(
        db,
        origin,
        "api_key.rotated",
        target_type="api_key",
        target_id=key.id,
        prefix=visible_prefix(key),
        old_secret_valid_until=old_valid_until.isoformat() if old_valid_until else None,
    )
    _notify_owner(db, origin, user_id, "api_key_rotated", key)
    db.commit()
    _publish(key)
    return IssuedKey(key, format_key(key.public_id, secret))
