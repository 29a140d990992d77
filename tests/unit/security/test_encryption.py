"""Encryption at rest: AES-256-GCM values carry their key id and nonce, are bound to their table,
column and row, refuse tampering, and the keyring comes from ENCRYPTION_KEYS with clear errors."""

from __future__ import annotations

import base64
import os
import secrets
import uuid

import pytest

from webapp.config import ConfigError, Settings
from webapp.security.encryption import (
    DEV_KID,
    DecryptionError,
    EncryptionKeyError,
    EncryptionKeyRing,
    load,
    new_key_entry,
)

ROW = uuid.UUID("00000000-0000-0000-0000-000000000001")
WHERE = {"table": "totp_factors", "column": "secret_encrypted", "row_id": ROW}
FIXED_KEY = base64.b64encode(bytes(range(32))).decode()  # test ids must not vary between workers


def key_entry(kid: str) -> str:
    return f"{kid}:{base64.b64encode(os.urandom(32)).decode()}"


@pytest.fixture
def ring() -> EncryptionKeyRing:
    return EncryptionKeyRing.parse(key_entry("k1"))


def test_a_value_round_trips_and_names_its_key_id(ring):
    stored = ring.encrypt("JBSWY3DPEHPK3PXP", **WHERE)

    assert stored.startswith("v1.k1.")
    assert "JBSWY3DPEHPK3PXP" not in stored
    assert ring.decrypt(stored, **WHERE) == "JBSWY3DPEHPK3PXP"


def test_the_same_plaintext_encrypts_differently_each_time(ring):
    assert ring.encrypt("same", **WHERE) != ring.encrypt("same", **WHERE)


@pytest.mark.parametrize(
    "elsewhere",
    [
        {**WHERE, "row_id": uuid.UUID("00000000-0000-0000-0000-000000000002")},
        {**WHERE, "column": "other_column"},
        {**WHERE, "table": "other_table"},
    ],
)
def test_a_value_moved_to_another_row_column_or_table_does_not_decrypt(ring, elsewhere):
    stored = ring.encrypt("secret", **WHERE)

    with pytest.raises(DecryptionError):
        ring.decrypt(stored, **elsewhere)


def test_a_tampered_ciphertext_is_rejected(ring):
    version, kid, nonce, sealed = ring.encrypt("secret", **WHERE).split(".")
    raw = bytearray(base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4)))
    raw[0] ^= 0x01
    flipped = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")

    with pytest.raises(DecryptionError, match="authentication"):
        ring.decrypt(".".join([version, kid, nonce, flipped]), **WHERE)


def test_a_relabelled_key_id_is_rejected():
    ring = EncryptionKeyRing.parse(f"{key_entry('k2')},{key_entry('k1')}")
    version, _, nonce, sealed = ring.encrypt("secret", **WHERE).split(".")

    with pytest.raises(DecryptionError):
        ring.decrypt(".".join([version, "k1", nonce, sealed]), **WHERE)


@pytest.mark.parametrize(
    "stored", ["plain text", "v2.k1.AAAA.BBBB", "v1.k1.!!!.BBBB", "v1.k1.AAAA.BBBB", "v1.k1"]
)
def test_malformed_stored_values_are_rejected(ring, stored):
    with pytest.raises(DecryptionError):
        ring.decrypt(stored, **WHERE)


def test_a_value_under_an_unknown_key_id_is_rejected(ring):
    other = EncryptionKeyRing.parse(key_entry("gone"))

    with pytest.raises(DecryptionError, match="unknown encryption key id"):
        ring.decrypt(other.encrypt("secret", **WHERE), **WHERE)


def test_the_first_key_encrypts_and_every_key_decrypts():
    old = EncryptionKeyRing.parse(key_entry("k1"))
    stored = old.encrypt("secret", **WHERE)
    rotated = EncryptionKeyRing((("k2", os.urandom(32)), *old.keys))

    assert not rotated.is_current(stored)
    fresh = rotated.reencrypt(stored, **WHERE)
    assert rotated.kid_of(fresh) == "k2"
    assert rotated.is_current(fresh)
    assert rotated.decrypt(fresh, **WHERE) == "secret"


def test_keys_may_be_written_in_standard_or_url_safe_base64_with_or_without_padding():
    raw = bytes(range(250, 256)) + os.urandom(26)
    standard = base64.b64encode(raw).decode()
    urlsafe = base64.urlsafe_b64encode(raw).decode().rstrip("=")

    ring = EncryptionKeyRing.parse(f"a:{standard}, b:{urlsafe}")

    assert ring.keys == (("a", raw), ("b", raw))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "empty"),
        ("k1", "kid:base64key"),
        ("k 1:" + "A" * 44, "key id"),
        ("k1:not*base64", "not valid base64"),
        ("k1:" + base64.b64encode(b"x" * 16).decode(), "32 bytes"),
        (f"k1:{FIXED_KEY},k1:{FIXED_KEY}", "twice"),
        (f"k1:{FIXED_KEY},", "empty"),
    ],
)
def test_a_malformed_keyring_is_refused_without_echoing_key_material(value, message):
    with pytest.raises(EncryptionKeyError, match=message) as caught:
        EncryptionKeyRing.parse(value)
    secret_part = value.partition(":")[2]
    if len(secret_part) > 8:
        assert secret_part not in str(caught.value)


def test_a_malformed_encryption_keys_variable_stops_start_up_naming_it():
    with pytest.raises(ConfigError, match=r"^ENCRYPTION_KEYS: "):
        Settings().with_overrides(encryption_keys="k1:tooshort")


def test_production_refuses_to_start_without_encryption_keys():
    production = Settings(
        env="production",
        secret_key=secrets.token_urlsafe(48),
        public_base_url="https://id.example",
        database_url="postgresql://gatehouse@db:5432/gatehouse",
        redis_url="redis://cache:6379/0",
        jwt_keys="{}",
    )
    with pytest.raises(ConfigError, match="ENCRYPTION_KEYS must be set in production"):
        production.validate()
    production.with_overrides(encryption_keys=key_entry("k1"))  # accepted once set


def test_production_refuses_a_short_api_key_pepper():
    production = Settings(
        env="production",
        secret_key=secrets.token_urlsafe(48),
        public_base_url="https://id.example",
        database_url="postgresql://gatehouse@db:5432/gatehouse",
        redis_url="redis://cache:6379/0",
        jwt_keys="{}",
        encryption_keys=key_entry("k1"),
    )
    with pytest.raises(ConfigError, match="API_KEY_PEPPER"):
        production.with_overrides(api_key_pepper="short")


def test_without_a_pepper_one_is_derived_from_the_secret_key():
    one, other = Settings(secret_key="a" * 40), Settings(secret_key="b" * 40)

    assert one.effective_api_key_pepper == Settings(secret_key="a" * 40).effective_api_key_pepper
    assert one.effective_api_key_pepper != other.effective_api_key_pepper
    assert Settings(api_key_pepper="p" * 32).effective_api_key_pepper == b"p" * 32


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"mfa_token_ttl": 0}, "MFA_TOKEN_TTL"),
        ({"mfa_token_ttl": 7200}, "MFA_TOKEN_TTL"),
        ({"api_key_rotation_grace": -1}, "API_KEY_ROTATION_GRACE"),
        ({"api_key_usage_flush_interval": 0}, "API_KEY_USAGE_FLUSH_INTERVAL"),
        ({"mfa_issuer": "a:b"}, "MFA_ISSUER"),
    ],
)
def test_out_of_range_credential_settings_name_their_variable(overrides, named):
    with pytest.raises(ConfigError, match=named):
        Settings().with_overrides(**overrides)


def test_development_derives_a_stable_key_from_the_secret_key():
    first = load(None, secret_key="dev-secret")
    again = load(None, secret_key="dev-secret")
    other = load(None, secret_key="another-secret")

    assert first.primary_kid == DEV_KID
    assert again.decrypt(first.encrypt("x", **WHERE), **WHERE) == "x"
    with pytest.raises(DecryptionError):
        other.decrypt(first.encrypt("x", **WHERE), **WHERE)


def test_configured_keys_win_over_the_derived_default():
    assert load(key_entry("prod1"), secret_key="dev-secret").primary_kid == "prod1"


def test_a_new_key_entry_is_a_valid_keyring_entry():
    entry = new_key_entry("k9")

    assert EncryptionKeyRing.parse(entry).primary_kid == "k9"
    with pytest.raises(EncryptionKeyError):
        new_key_entry("bad id")


def test_an_empty_keyring_cannot_be_built():
    with pytest.raises(EncryptionKeyError):
        EncryptionKeyRing(())
