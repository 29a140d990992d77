"""Encryption at rest: AES-256-GCM under a keyring with key ids (`ENCRYPTION_KEYS`).

Owns the one format every encrypted column uses, and the rule that binds a value to where it is
stored. `ENCRYPTION_KEYS` is `kid:base64key,kid:base64key`; the first key encrypts, every key
decrypts, so a new key is put first and the old ones stay until `flask --app wsgi keys
rotate-encryption` has re-encrypted every row (values are also re-encrypted lazily when a service
reads and writes them anyway).

Stored form (ASCII, fits a Text column on PostgreSQL and SQLite alike)::

    v1.<kid>.<base64url nonce (12 bytes)>.<base64url ciphertext || 16-byte GCM tag>

The associated data is `v1|<kid>|<table>|<column>|<row id>`: a ciphertext copied into another row
or column, or relabelled with another key id, fails authentication instead of decrypting. Nonces
are random (96 bits); with one key encrypting well under 2^32 values (NIST SP 800-38D's bound for
random nonces) that is safe, and rotation resets the count.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from flask import current_app
from sqlalchemy import Engine, MetaData, select, update

VERSION = "v1"
KEY_BYTES = 32
NONCE_BYTES = 12
DEV_KID = "dev"
_KID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class EncryptionKeyError(ValueError):
    """`ENCRYPTION_KEYS` is malformed (the message never contains key material)."""


class DecryptionError(Exception):
    """A stored value is malformed, under an unknown key, or was tampered with."""


def _b64decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    if re.fullmatch(r"[A-Za-z0-9+/=]*", padded):
        return base64.b64decode(padded, validate=True)
    return base64.urlsafe_b64decode(padded.encode("ascii"))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]+", text):
        raise DecryptionError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class EncryptionKeyRing:
    """Keys by id; `primary` (the first configured) encrypts."""

    keys: tuple[tuple[str, bytes], ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise EncryptionKeyError("at least one key is required")

    @classmethod
    def parse(cls, value: str) -> EncryptionKeyRing:
        """`kid:base64key,kid:base64key` → a keyring; every defect is an EncryptionKeyError."""
        keys: list[tuple[str, bytes]] = []
        for position, item in enumerate((p.strip() for p in value.split(",")), start=1):
            if not item:
                raise EncryptionKeyError(f"entry {position} is empty")
            kid, sep, encoded = item.partition(":")
            if not sep:
                raise EncryptionKeyError(f"entry {position} is not of the form kid:base64key")
            if not _KID.match(kid):
                raise EncryptionKeyError(
                    f"entry {position}: the key id must be 1-32 of A-Z a-z 0-9 _ -"
                )
            if any(kid == known for known, _ in keys):
                raise EncryptionKeyError(f"key id {kid!r} appears twice")
            try:
                key = _b64decode(encoded.strip())
            except (binascii.Error, ValueError):
                raise EncryptionKeyError(f"key {kid!r} is not valid base64") from None
            if len(key) != KEY_BYTES:
                raise EncryptionKeyError(
                    f"key {kid!r} must decode to {KEY_BYTES} bytes (AES-256), got {len(key)}"
                )
            keys.append((kid, key))
        return cls(tuple(keys))

    @classmethod
    def derived(cls, secret: str) -> EncryptionKeyRing:
        """Development and test only: one key derived from SECRET_KEY (see `load`)."""
        key = hmac.new(secret.encode(), b"gatehouse encryption key v1", hashlib.sha256).digest()
        return cls(((DEV_KID, key),))

    @property
    def primary_kid(self) -> str:
        return self.keys[0][0]

    def _key(self, kid: str) -> bytes | None:
        return next((key for known, key in self.keys if known == kid), None)

    @staticmethod
    def _aad(kid: str, table: str, column: str, row_id: object) -> bytes:
        return f"{VERSION}|{kid}|{table}|{column}|{row_id}".encode()

    def encrypt(self, plaintext: str, *, table: str, column: str, row_id: object) -> str:
        kid, key = self.keys[0]
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(key).encrypt(
            nonce, plaintext.encode("utf-8"), self._aad(kid, table, column, row_id)
        )
        return f"{VERSION}.{kid}.{_b64(nonce)}.{_b64(sealed)}"

    def decrypt(self, stored: str, *, table: str, column: str, row_id: object) -> str:
        parts = stored.split(".")
        if len(parts) != 4 or parts[0] != VERSION:
            raise DecryptionError("not an encrypted value")
        _, kid, nonce_text, sealed_text = parts
        key = self._key(kid)
        if key is None:
            raise DecryptionError(f"unknown encryption key id {kid!r}")
        nonce, sealed = _unb64(nonce_text), _unb64(sealed_text)
        if len(nonce) != NONCE_BYTES:
            raise DecryptionError("bad nonce")
        try:
            plaintext = AESGCM(key).decrypt(nonce, sealed, self._aad(kid, table, column, row_id))
        except InvalidTag:
            raise DecryptionError("the value failed authentication (tampered or moved)") from None
        return plaintext.decode("utf-8")

    def kid_of(self, stored: str) -> str | None:
        parts = stored.split(".")
        return parts[1] if len(parts) == 4 and parts[0] == VERSION else None

    def is_current(self, stored: str) -> bool:
        """Encrypted under the primary key (nothing to re-encrypt)."""
        return self.kid_of(stored) == self.primary_kid

    def reencrypt(self, stored: str, *, table: str, column: str, row_id: object) -> str:
        plaintext = self.decrypt(stored, table=table, column=column, row_id=row_id)
        return self.encrypt(plaintext, table=table, column=column, row_id=row_id)


def load(encryption_keys: str | None, *, secret_key: str) -> EncryptionKeyRing:
    """The configured keyring; without `ENCRYPTION_KEYS` (refused in production by the settings),
    a key derived from SECRET_KEY — stable across restarts and shared by every process of a
    development or test setup without a file to keep in sync."""
    if encryption_keys:
        return EncryptionKeyRing.parse(encryption_keys)
    return EncryptionKeyRing.derived(secret_key)


def keyring() -> EncryptionKeyRing:
    """The keyring of the application in context."""
    ring: EncryptionKeyRing = current_app.extensions["gatehouse_encryption"]
    return ring


def new_key_entry(kid: str) -> str:
    """A fresh `kid:base64key` entry for `ENCRYPTION_KEYS` (used by the CLI and the docs)."""
    if not _KID.match(kid):
        raise EncryptionKeyError("the key id must be 1-32 of A-Z a-z 0-9 _ -")
    return f"{kid}:{base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()}"


# --- the encrypted columns, and their rotation ------------------------------------------------


@dataclass(frozen=True)
class EncryptedColumn:
    """A column holding `v1.` values; `id_column` is the row id bound into the associated data.

    With `json_key`, the column is a JSON object and only its `json_key` member (when present)
    is encrypted; the associated data then names `column.json_key` (see `label`)."""

    table: str
    column: str
    id_column: str = "id"
    # Columns that may also hold plaintext rows (only some rows are sensitive) skip those.
    mixed: bool = False
    json_key: str | None = None

    @property
    def label(self) -> str:
        """The column name bound into the associated data."""
        return f"{self.column}.{self.json_key}" if self.json_key else self.column


ENCRYPTED_COLUMNS: list[EncryptedColumn] = []


def register(column: EncryptedColumn) -> EncryptedColumn:
    if column not in ENCRYPTED_COLUMNS:
        ENCRYPTED_COLUMNS.append(column)
    return column


def rotate_all(engine: Engine, metadata: MetaData, batch_size: int = 500) -> dict[str, int]:
    """Re-encrypt every registered column's values that are not under the primary key.

    Works in batches (keyset order by row id), each in its own transaction with the rows locked,
    so it can run while the service serves traffic and be resumed after an interruption.
    Returns `table.column` → rows re-encrypted.
    """
    ring = keyring()
    done: dict[str, int] = {}
    for spec in ENCRYPTED_COLUMNS:
        table = metadata.tables[spec.table]
        id_col, value_col = table.c[spec.id_column], table.c[spec.column]
        present = (
            value_col[spec.json_key].as_string().is_not(None)
            if spec.json_key
            else value_col.is_not(None)
        )
        count, after = 0, None
        while True:
            query = select(id_col, value_col).where(present).order_by(id_col)
            if after is not None:
                query = query.where(id_col > after)
            with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    query = query.with_for_update()
                rows = conn.execute(query.limit(batch_size)).all()
                for row_id, value in rows:
                    stored = value[spec.json_key] if spec.json_key else value
                    if ring.is_current(stored) or (spec.mixed and ring.kid_of(stored) is None):
                        continue
                    try:
                        fresh = ring.reencrypt(
                            stored, table=spec.table, column=spec.label, row_id=row_id
                        )
                    except DecryptionError as exc:  # name the row; nothing of this batch is kept
                        raise DecryptionError(
                            f"{spec.table}.{spec.label} {row_id}: {exc}"
                        ) from None
                    replacement = {**value, spec.json_key: fresh} if spec.json_key else fresh
                    conn.execute(
                        update(table).where(id_col == row_id).values({value_col: replacement})
                    )
                    count += 1
            if len(rows) < batch_size:
                break
            after = rows[-1][0]
        done[f"{spec.table}.{spec.label}"] = count
    return done
