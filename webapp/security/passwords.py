"""Password hashing and verification.

Owns the storage format of user passwords: new hashes are Argon2id with OWASP's parameters
(m=19456 KiB, t=2, p=1); legacy bcrypt hashes (``$2a$``, ``$2b$``, ``$2y$``) are still accepted and
reported for upgrade, as are Argon2 hashes made with other parameters. Also owns the dummy
verification that makes an unknown account cost as much as a wrong password.

Passwords are NFKC-normalised before Argon2 hashing (NIST SP 800-63B), so the same password typed
on different keyboards or platforms (composed vs decomposed accents, full-width forms) matches.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import bcrypt
from argon2 import PasswordHasher
from argon2.exceptions import Argon2Error

__all__ = [
    "PasswordCheck",
    "equalize_timing",
    "hash_password",
    "normalize_password",
    "verify_password",
]

# OWASP Password Storage Cheat Sheet, Argon2id option "m=19456 (19 MiB), t=2, p=1".
_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)

_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
_ARGON2_PREFIXES = ("$argon2id$", "$argon2i$", "$argon2d$")
# bcrypt only ever looked at the first 72 bytes of the password.
_BCRYPT_MAX_BYTES = 72


@dataclass(frozen=True, slots=True)
class PasswordCheck:
    """Outcome of :func:`verify_password`.

    ``upgraded_hash`` is set only when the password was correct and the stored hash should be
    replaced by it (legacy bcrypt, or Argon2 with parameters other than the current ones).
    """

    ok: bool
    upgraded_hash: str | None = None


def normalize_password(password: str) -> str:
    """Return the form of *password* that is hashed and checked by the policy (NFKC)."""
    return unicodedata.normalize("NFKC", password)


def hash_password(password: str) -> str:
    """Hash *password* with Argon2id (OWASP parameters) and return the encoded hash."""
    return _hasher.hash(normalize_password(password))


def verify_password(stored_hash: str, password: str) -> PasswordCheck:
    """Check *password* against *stored_hash* (Argon2 or bcrypt).

    Never raises for a malformed or unknown hash format: that is simply ``ok=False``.
    """
    if stored_hash.startswith(_ARGON2_PREFIXES):
        return _verify_argon2(stored_hash, password)
    if stored_hash.startswith(_BCRYPT_PREFIXES):
        return _verify_bcrypt(stored_hash, password)
    return PasswordCheck(ok=False)


def equalize_timing(password: str) -> None:
    """Spend the time of a real failed verification, for requests that have no account to check.

    Call it when the email is unknown so that answering "no such user" costs the same as
    answering "wrong password" and response time does not reveal which accounts exist. It does
    the work :func:`_verify_argon2` does for a wrong password: a second Argon2 run on the raw
    string when NFKC changes it (full-width forms, decomposed accents).
    """
    normalized = normalize_password(password)
    _argon2_matches(_DUMMY_HASH, normalized)
    if normalized != password:
        _argon2_matches(_DUMMY_HASH, password)


def _verify_argon2(stored_hash: str, password: str) -> PasswordCheck:
    normalized = normalize_password(password)
    matched = _argon2_matches(stored_hash, normalized)
    if not matched and normalized != password:
        # A hash imported from a system that did not normalise was made from the raw string.
        matched = _argon2_matches(stored_hash, password)
    if not matched:
        return PasswordCheck(ok=False)
    try:
        stale = _hasher.check_needs_rehash(stored_hash)
    except ValueError:
        stale = True
    if stale or normalized != password:
        return PasswordCheck(ok=True, upgraded_hash=_hasher.hash(normalized))
    return PasswordCheck(ok=True)


def _argon2_matches(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    # InvalidHashError and non-ASCII garbage (UnicodeEncodeError) are ValueErrors.
    except (Argon2Error, ValueError):
        return False


def _verify_bcrypt(stored_hash: str, password: str) -> PasswordCheck:
    # The legacy system hashed the raw (un-normalised) bytes, and bcrypt before 5.0 silently
    # used only the first 72 of them. bcrypt 5 raises instead, so truncate the way the hash was
    # made: a long password whose first 72 bytes match is the password the user set. The upgraded
    # Argon2 hash covers the whole password, so from then on every byte counts.
    secret = password.encode("utf-8")[:_BCRYPT_MAX_BYTES]
    try:
        ok = bcrypt.checkpw(secret, stored_hash.encode("ascii"))
    except ValueError:
        return PasswordCheck(ok=False)
    if not ok:
        return PasswordCheck(ok=False)
    return PasswordCheck(ok=True, upgraded_hash=hash_password(password))


# Made at import with the live parameters so it can never drift from what real hashes cost.
_DUMMY_HASH = _hasher.hash("gatehouse timing equalizer")
