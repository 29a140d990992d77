"""`Idempotency-Key` on creating POSTs: a retry with the same key and body gets the first response.

The key is scoped to the caller (user id, or anonymous) and the route. The record is claimed in
its own short transaction before the view runs, so two concurrent retries cannot both create:
the second sees the claim and gets 409 until the first finishes. The same key with another body
is a client bug: 422. Server errors release the key so that a retry can succeed.

Responses that carry a secret shown once (a new API key, MFA recovery codes) use
`idempotent_sensitive`: the stored body is encrypted at rest (webapp.security.encryption), bound
to its record, so a replay still returns it and the table never holds it in the clear.

The body is remembered by a fingerprint, kept as long as the record: an HMAC-SHA256 under a key
derived from SECRET_KEY (`fingerprint_key`), over the canonical JSON with the value of every
secret field (a name holding password, secret, token, code, key…) replaced by a placeholder.
A plain SHA-256 of a registration body was a password equivalent anyone with the table could
attack at hundreds of thousands of guesses a second; this one holds nothing of the password, and
without the server key nothing of the rest can be guessed either. The price: a retry whose body
differs only in a secret field is the same request and gets the first answer.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar, cast

from flask import Response, current_app, g, request
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from webapp.config import current_settings
from webapp.db import utcnow
from webapp.errors import Conflict, ValidationFailed
from webapp.extensions import db
from webapp.http.idempotency_records import MAX_KEY_LENGTH, SEALED_BODY, IdempotencyRecord
from webapp.security import encryption

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
REPLAYED_HEADERS = ("Location", "ETag", "Content-Type")
F = TypeVar("F", bound=Callable[..., Any])


FINGERPRINT_PURPOSE = b"gatehouse idempotency fingerprint v1"
PLACEHOLDER = "[secret]"
_SECRET_FIELD = re.compile(r"(?i)pass(?:word|wd|phrase)|secret|token|code|key|credential")


def fingerprint_key(secret_key: str) -> bytes:
    """The HMAC key of request fingerprints: SECRET_KEY's, for this one purpose."""
    return hmac.new(secret_key.encode(), FINGERPRINT_PURPOSE, hashlib.sha256).digest()


def without_secrets(document: Any) -> Any:
    """`document` with the value of every secret field (at any depth) replaced by a placeholder:
    which fields were sent still counts, what they held does not."""
    if isinstance(document, dict):
        return {
            name: PLACEHOLDER if _SECRET_FIELD.search(name) else without_secrets(value)
            for name, value in document.items()
        }
    if isinstance(document, list):
        return [without_secrets(value) for value in document]
    return document


def request_fingerprint(secret_key: str, method: str, path: str, raw: bytes) -> str:
    """The keyed fingerprint (hex, 64 characters) of a request body, secrets left out."""
    try:
        document = without_secrets(json.loads(raw or b"null"))
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, RecursionError):  # not JSON: keyed all the same
        canonical = raw
    message = f"{method} {path}\n".encode() + canonical
    return hmac.new(fingerprint_key(secret_key), message, hashlib.sha256).hexdigest()


def _request_hash() -> str:
    secret_key = current_settings().secret_key
    return request_fingerprint(
        secret_key, request.method, request.path, request.get_data(cache=True)
    )


def _scope() -> str:
    principal = g.get("principal")
    who = f"user:{principal.user_id}" if principal is not None else "anonymous"
    return f"{who} {request.method} {request.path}"


def _seal(body: str, record_id: uuid.UUID) -> str:
    return encryption.keyring().encrypt(
        body, table=SEALED_BODY.table, column=SEALED_BODY.column, row_id=record_id
    )


def _unseal(body: str, record_id: uuid.UUID) -> str:
    ring = encryption.keyring()
    if ring.kid_of(body) is None:
        return body
    return ring.decrypt(body, table=SEALED_BODY.table, column=SEALED_BODY.column, row_id=record_id)


def _replay(record: IdempotencyRecord) -> Response:
    response = current_app.response_class(
        _unseal(record.response_body or "", record.id), status=record.status_code or 200
    )
    for name, value in record.response_headers.items():
        response.headers[name] = value
    response.headers[REPLAYED_HEADER] = "true"
    return response


def _claim(key: str, scope: str, request_hash: str) -> uuid.UUID | Response:
    ttl = timedelta(seconds=current_settings().idempotency_ttl)
    with Session(db.engine) as session:
        existing = session.scalar(
            select(IdempotencyRecord).where(
                IdempotencyRecord.scope == scope, IdempotencyRecord.key == key
            )
        )
        if existing is not None and existing.created_at < utcnow() - ttl:
            session.delete(existing)
            session.commit()
            existing = None
        if existing is not None:
            if existing.request_hash != request_hash:
                raise ValidationFailed(
                    "This Idempotency-Key was used with a different request body.",
                    slug="idempotency-key-reused",
                    errors={HEADER: ["already used with another request"]},
                )
            if existing.completed_at is None:
                raise Conflict(
                    "A request with this Idempotency-Key is still in progress.",
                    slug="idempotency-in-progress",
                )
            return _replay(existing)
        record = IdempotencyRecord(scope=scope, key=key, request_hash=request_hash)
        session.add(record)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            raise Conflict(
                "A request with this Idempotency-Key is still in progress.",
                slug="idempotency-in-progress",
            ) from None
        return record.id


def _settle(record_id: uuid.UUID, response: Response | None, *, sensitive: bool = False) -> None:
    with Session(db.engine) as session:
        keep = response is not None and response.status_code < 500
        keep = keep and response is not None and response.status_code not in (409, 429)
        if not keep or response is None:
            session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id == record_id))
        else:
            record = session.get(IdempotencyRecord, record_id)
            if record is not None:
                record.status_code = response.status_code
                body = response.get_data(as_text=True)
                record.response_body = _seal(body, record_id) if sensitive else body
                record.response_headers = {
                    name: response.headers[name]
                    for name in REPLAYED_HEADERS
                    if name in response.headers
                }
                record.completed_at = utcnow()
        session.commit()


def idempotent(view: F) -> F:
    """Honour `Idempotency-Key` on a creating POST (place it below the auth decorator)."""
    return _make_idempotent(view, sensitive=False)


def idempotent_sensitive(view: F) -> F:
    """`idempotent` for a response holding a secret: its stored copy is encrypted at rest."""
    return _make_idempotent(view, sensitive=True)


def _make_idempotent(view: F, *, sensitive: bool) -> F:
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = request.headers.get(HEADER)
        if key is None:
            return view(*args, **kwargs)
        if not key or len(key) > MAX_KEY_LENGTH:
            raise ValidationFailed(
                "Idempotency-Key must be 1 to 255 characters.",
                errors={HEADER: ["must be 1 to 255 characters"]},
            )
        claimed = _claim(key, _scope(), _request_hash())
        if isinstance(claimed, Response):
            return claimed
        response: Response | None = None
        try:
            response = current_app.make_response(view(*args, **kwargs))
            return response
        finally:
            _settle(claimed, response, sensitive=sensitive)

    doc = getattr(wrapper, "_apidoc", {})
    doc.setdefault("manual_doc", {}).setdefault("parameters", []).append(
        {
            "in": "header",
            "name": HEADER,
            "required": False,
            "schema": {"type": "string", "maxLength": MAX_KEY_LENGTH},
            "description": "Retry-safe creation: the same key and body return the first response.",
        }
    )
    # flask-smorest reads the view's OpenAPI additions from this attribute of the function.
    wrapper._apidoc = doc  # type: ignore[attr-defined]
    return cast(F, wrapper)
