import bcrypt
import pytest
from argon2 import PasswordHasher, Type
from argon2.exceptions import VerifyMismatchError

from webapp.security import passwords
from webapp.security.passwords import (
    PasswordCheck,
    equalize_timing,
    hash_password,
    verify_password,
)

OWASP_PREFIX = "$argon2id$v=19$m=19456,t=2,p=1$"
PASSWORD = "correct horse battery staple"


def _legacy_bcrypt(secret: bytes, prefix: str = "2b") -> str:
    # rounds=4 keeps the test fast; the cost is read from the hash when verifying.
    made = bcrypt.hashpw(secret, bcrypt.gensalt(rounds=4)).decode("ascii")
    return made.replace("$2b$", f"${prefix}$", 1)


def test_hash_is_argon2id_with_owasp_parameters():
    stored = hash_password(PASSWORD)

    assert stored.startswith(OWASP_PREFIX)
    assert stored != hash_password(PASSWORD), "each hash must have its own salt"


def test_correct_password_verifies_without_upgrade():
    assert verify_password(hash_password(PASSWORD), PASSWORD) == PasswordCheck(
        ok=True, upgraded_hash=None
    )


def test_wrong_password_is_rejected():
    result = verify_password(hash_password(PASSWORD), "correct horse battery stapler")

    assert result == PasswordCheck(ok=False, upgraded_hash=None)


def test_password_check_is_frozen():
    result = PasswordCheck(ok=True, upgraded_hash=None)

    with pytest.raises(AttributeError):
        result.ok = False  # type: ignore[misc]


@pytest.mark.parametrize("prefix", ["2a", "2b", "2y"])
def test_bcrypt_hash_is_accepted_and_upgraded_to_argon2id(prefix):
    legacy = _legacy_bcrypt(PASSWORD.encode(), prefix)
    assert legacy.startswith(f"${prefix}$")

    result = verify_password(legacy, PASSWORD)

    assert result.ok
    assert result.upgraded_hash is not None
    assert result.upgraded_hash.startswith(OWASP_PREFIX)
    assert verify_password(result.upgraded_hash, PASSWORD) == PasswordCheck(True, None)


def test_bcrypt_wrong_password_is_rejected_and_not_upgraded():
    result = verify_password(_legacy_bcrypt(PASSWORD.encode()), "not the password at all")

    assert result == PasswordCheck(ok=False, upgraded_hash=None)


def test_long_password_against_bcrypt_is_checked_on_its_first_72_bytes():
    long_password = "é" * 40 + " and some more words"  # 80 bytes before the tail
    encoded = long_password.encode("utf-8")
    assert len(encoded) > 72
    # What a pre-5.0 bcrypt stored: it silently ignored everything after byte 72.
    legacy = _legacy_bcrypt(encoded[:72])

    result = verify_password(legacy, long_password)

    assert result.ok
    assert result.upgraded_hash is not None
    # The upgrade covers the whole password, so the truncated form no longer matches.
    assert verify_password(result.upgraded_hash, long_password).ok
    assert not verify_password(result.upgraded_hash, encoded[:72].decode("utf-8")).ok
    assert not verify_password(legacy, "x" + long_password).ok


@pytest.mark.parametrize(
    "hasher",
    [
        PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1),
        PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, type=Type.I),
        PasswordHasher(time_cost=2, memory_cost=19456, parallelism=2),
    ],
    ids=["weaker-parameters", "argon2i", "other-parallelism"],
)
def test_outdated_argon2_hash_is_upgraded(hasher):
    result = verify_password(hasher.hash(PASSWORD), PASSWORD)

    assert result.ok
    assert result.upgraded_hash is not None
    assert result.upgraded_hash.startswith(OWASP_PREFIX)


def test_outdated_argon2_hash_with_wrong_password_is_not_upgraded():
    old = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)

    assert verify_password(old, "wrong password here") == PasswordCheck(False, None)


def test_passwords_are_compared_after_nfkc_normalisation():
    composed = "Ångström-Café-Rhapsody"
    decomposed = "A\u030angstro\u0308m-Cafe\u0301-Rhapsody"
    assert composed != decomposed

    assert verify_password(hash_password(composed), decomposed).ok
    assert verify_password(hash_password(decomposed), composed).ok


def test_unnormalised_argon2_hash_from_elsewhere_still_verifies_and_is_upgraded():
    decomposed = "A\u030angstro\u0308m-Cafe\u0301-Rhapsody"
    imported = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1).hash(decomposed)

    result = verify_password(imported, decomposed)

    assert result.ok
    assert result.upgraded_hash is not None
    assert verify_password(result.upgraded_hash, "Ångström-Café-Rhapsody").ok


@pytest.mark.parametrize(
    "garbled",
    [
        "",
        "plaintext-password",
        "$argon2id$",
        "$argon2id$garbage",
        "$argon2id$v=19$m=19456,t=2,p=1$!!!!$!!!!",
        "$argon2id$v=19$m=19456,t=2,p=1$é$é",
        "$2b$04$short",
        "$2b$99$" + "a" * 53,
        "$2x$04$" + "a" * 53,  # crypt_blowfish's buggy variant: not a format we accept
        "$1$saltsalt$md5cryptdigest000000",
        "pbkdf2_sha256$600000$salt$digest",
    ],
)
def test_garbled_or_unknown_hash_is_false_not_an_exception(garbled):
    assert verify_password(garbled, PASSWORD) == PasswordCheck(ok=False, upgraded_hash=None)


def test_equalize_timing_performs_a_real_argon2_verification(monkeypatch):
    real = passwords._hasher
    calls: list[tuple[str, str]] = []

    class RecordingHasher:
        def verify(self, stored_hash, password):
            calls.append((stored_hash, password))
            return real.verify(stored_hash, password)

    monkeypatch.setattr(passwords, "_hasher", RecordingHasher())

    equalize_timing("whatever the attacker typed")  # a mismatch must not raise

    assert len(calls) == 1
    dummy, checked = calls[0]
    assert checked == "whatever the attacker typed"
    # A real hash with the live parameters, so the work equals a genuine wrong-password check.
    assert dummy.startswith(OWASP_PREFIX)
    assert not real.check_needs_rehash(dummy)
    with pytest.raises(VerifyMismatchError):
        real.verify(dummy, "whatever the attacker typed")
