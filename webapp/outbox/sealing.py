"""Secrets in queued emails, encrypted at rest.

A message's payload holds what a worker needs to render it, one-time links and tokens included,
and it waits in `outbox_messages` (and so in every backup) until it is sent — for hours when the
mail server is down, indefinitely as a dead letter. So the secret fields are taken out of the
payload when the message is written and stored as one AES-256-GCM value (the `ENCRYPTION_KEYS`
keyring, bound to the message's row) under the payload key `sealed`; the worker opens it in
memory just before rendering, and the sent message drops it (so does a dead one whose template
re-issues its token at replay: webapp.outbox.service). A dump holds no usable token without the
keys, which are never in the database.

Secret by default: fields named `token` or `link`, or ending in `_token` or `_link` (every link
may carry a token, so links are sealed whatever they point to). `enqueue(secret_fields=...)`
names others. Rows written before sealing existed (plaintext) still open and send as they are.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Mapping
from typing import Any

from webapp.outbox.models import SEALED_PAYLOAD
from webapp.security import encryption

SEALED_KEY = SEALED_PAYLOAD.json_key or "sealed"
SECRET_NAMES = frozenset({"token", "link"})
SECRET_SUFFIXES = ("_token", "_link")
SCRUBBED = "[removed after sending]"


def is_secret_field(name: str) -> bool:
    return name in SECRET_NAMES or name.endswith(SECRET_SUFFIXES)


def seal(
    payload: Mapping[str, Any],
    message_id: uuid.UUID,
    secret_fields: Collection[str] | None = None,
) -> dict[str, Any]:
    """The payload to store: its secret fields replaced by one encrypted `sealed` member."""
    if SEALED_KEY in payload:
        raise ValueError(f"{SEALED_KEY!r} is reserved in an outbox payload")
    secret = {
        name: value
        for name, value in payload.items()
        if (name in secret_fields if secret_fields is not None else is_secret_field(name))
    }
    stored = {name: value for name, value in payload.items() if name not in secret}
    if secret:
        stored[SEALED_KEY] = encryption.keyring().encrypt(
            json.dumps(secret, separators=(",", ":")),
            table=SEALED_PAYLOAD.table,
            column=SEALED_PAYLOAD.label,
            row_id=message_id,
        )
    return stored


def is_sealed(payload: Mapping[str, Any]) -> bool:
    return SEALED_KEY in payload


def open_payload(payload: Mapping[str, Any], message_id: uuid.UUID) -> dict[str, Any]:
    """The whole payload, secrets included, for rendering in memory. Raises DecryptionError
    when the key that sealed it is no longer configured (or the value was tampered with)."""
    opened = {name: value for name, value in payload.items() if name != SEALED_KEY}
    sealed = payload.get(SEALED_KEY)
    if isinstance(sealed, str):
        secret = encryption.keyring().decrypt(
            sealed, table=SEALED_PAYLOAD.table, column=SEALED_PAYLOAD.label, row_id=message_id
        )
        opened.update(json.loads(secret))
    return opened


def scrubbed(payload: Mapping[str, Any]) -> dict[str, Any]:
    """What a sent message keeps: no secret, sealed or (in rows older than sealing) plain."""
    cleaned = {name: value for name, value in payload.items() if name != SEALED_KEY}
    for name, value in cleaned.items():
        if is_secret_field(name) and isinstance(value, str) and value != SCRUBBED:
            # An old plaintext row: a link keeps its page, never its query (the token).
            cleaned[name] = value.split("?", 1)[0] if name.endswith("link") else SCRUBBED
    return cleaned
