"""The JWT signing keyring.

Owns the asymmetric keys that sign access tokens, read from a JWK Set with private parts
(``JWT_KEYS`` or the file named by ``JWT_KEYS_FILE``), and the rotation schedule:

* a key with ``"status": "next"`` is published but does not sign yet (at most one);
* the first key not marked ``next`` is the signing key;
* every other key is a previous key: it no longer signs but still verifies.

Rotation promotes the next key to signing, keeps the old signing key as the single previous key
and creates a new next key, so every key is published one rotation before it signs and stays
published one rotation after it stops: verifiers that cache the JWKS never meet an unknown kid.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm
from jwt.exceptions import InvalidKeyError
from jwt.utils import base64url_encode

__all__ = [
    "SUPPORTED_ALGORITHMS",
    "KeyRing",
    "KeyRingError",
    "PrivateKey",
    "PublicKey",
    "SigningKey",
    "generate_jwk",
    "jwk_thumbprint",
    "write_new_keyfile",
]

# Pass these as PyJWT's `algorithms=` when verifying: never let the token header choose freely.
SUPPORTED_ALGORITHMS: tuple[str, ...] = ("RS256", "EdDSA")
_MIN_RSA_BITS = 2048
_NEW_RSA_BITS = 2048
_STATUS_NEXT = "next"

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ed25519.Ed25519PublicKey

# The public half of each key type (RFC 7518): the only key members ever published.
_PUBLIC_MEMBERS = {"RSA": ("n", "e"), "OKP": ("crv", "x")}
_PRIVATE_MEMBERS = {"RSA": ("d", "p", "q", "dp", "dq", "qi"), "OKP": ("d",)}


class KeyRingError(ValueError):
    """The JWT key configuration is unusable; the message names the problem, never key material."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One key of the ring. ``private_key`` is a cryptography object PyJWT signs with."""

    kid: str
    alg: str
    private_key: PrivateKey

    @property
    def public_key(self) -> PublicKey:
        return self.private_key.public_key()

    def public_jwk(self) -> dict[str, str]:
        """The publishable JWK: kty, kid, alg, use and the public numbers only."""
        jwk = _key_to_jwk(self.public_key)
        kty = jwk["kty"]
        public = {"kty": kty, "kid": self.kid, "alg": self.alg, "use": "sig"}
        public.update({member: jwk[member] for member in _PUBLIC_MEMBERS[kty]})
        return public

    def private_jwk(self) -> dict[str, str]:
        """The full JWK including private members, for writing back to the key store."""
        jwk = _key_to_jwk(self.private_key)
        private = self.public_jwk()
        private.update({member: jwk[member] for member in _PRIVATE_MEMBERS[jwk["kty"]]})
        return private


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 thumbprint (base64url SHA-256 of the required public members), used as ``kid``."""
    kty = jwk.get("kty")
    if kty not in _PUBLIC_MEMBERS:
        raise KeyRingError(f"cannot compute a thumbprint for key type {kty!r}")
    if any(member not in jwk for member in _PUBLIC_MEMBERS[kty]):
        raise KeyRingError(f"a {kty} JWK needs {' and '.join(_PUBLIC_MEMBERS[kty])}")
    required = {"kty": kty, **{member: jwk[member] for member in _PUBLIC_MEMBERS[kty]}}
    canonical = json.dumps(required, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return base64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest()).decode("ascii")


def generate_jwk(alg: str = "RS256") -> dict[str, str]:
    """Generate a private JWK for *alg* (RS256: RSA 2048, EdDSA: Ed25519) with a thumbprint kid."""
    return _generate_key(alg).private_jwk()


class KeyRing:
    """The next, signing and previous JWT keys; immutable, rotation returns a new ring."""

    __slots__ = ("_next", "_previous", "_signing")

    def __init__(
        self,
        signing: SigningKey,
        previous: Iterable[SigningKey] = (),
        next_key: SigningKey | None = None,
    ) -> None:
        self._signing = signing
        self._previous = tuple(previous)
        self._next = next_key
        kids = [key.kid for key in self._all_keys()]
        duplicates = sorted({kid for kid in kids if kids.count(kid) > 1})
        if duplicates:
            raise KeyRingError(f"duplicate kid(s) in the key set: {', '.join(duplicates)}")

    @classmethod
    def from_jwks(cls, data: object) -> KeyRing:
        """Build a ring from a parsed JWK Set (``{"keys": [...]}``) with private parts."""
        if not isinstance(data, Mapping):
            raise KeyRingError('expected a JWK Set, a JSON object of the form {"keys": [...]}')
        if "keys" not in data:
            hint = " (this looks like a single JWK)" if "kty" in data else ""
            raise KeyRingError(f'expected a JWK Set with a "keys" list{hint}')
        entries = data["keys"]
        if not isinstance(entries, list) or not entries:
            raise KeyRingError('the JWK Set\'s "keys" must be a non-empty list')

        upcoming: list[SigningKey] = []
        active: list[SigningKey] = []
        for position, entry in enumerate(entries):
            key, is_next = _parse_entry(entry, position)
            (upcoming if is_next else active).append(key)
        if len(upcoming) > 1:
            kids = ", ".join(key.kid for key in upcoming)
            raise KeyRingError(f'more than one key has "status": "next" ({kids}); keep one')
        if not active:
            raise KeyRingError(
                'no signing key: every key has "status": "next"; the first key without it signs'
            )
        return cls(active[0], previous=active[1:], next_key=upcoming[0] if upcoming else None)

    @classmethod
    def load(cls, keys_json: str | None, keys_file: str | os.PathLike[str] | None) -> KeyRing:
        """Build a ring from ``JWT_KEYS`` (JSON text) or ``JWT_KEYS_FILE`` (a path): exactly one."""
        text = keys_json if keys_json and keys_json.strip() else None
        path = Path(keys_file) if keys_file and str(keys_file).strip() else None
        if path is None:
            if text is None:
                raise KeyRingError("set one of JWT_KEYS or JWT_KEYS_FILE (neither is set)")
            return cls._parse_text(text, "JWT_KEYS")
        if text is not None:
            raise KeyRingError("set only one of JWT_KEYS or JWT_KEYS_FILE (both are set)")
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise KeyRingError(f"JWT_KEYS_FILE {str(path)!r} does not exist") from None
        except OSError as exc:
            raise KeyRingError(
                f"JWT_KEYS_FILE {str(path)!r} cannot be read: {exc.strerror}"
            ) from None
        except UnicodeDecodeError:
            raise KeyRingError(f"JWT_KEYS_FILE {str(path)!r} is not UTF-8 text") from None
        return cls._parse_text(text, f"JWT_KEYS_FILE {str(path)!r}")

    @classmethod
    def _parse_text(cls, text: str, source: str) -> KeyRing:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            # exc.msg and the position only: the document itself holds private keys.
            raise KeyRingError(
                f"{source} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
        try:
            return cls.from_jwks(data)
        except KeyRingError as exc:
            raise KeyRingError(f"{source}: {exc}") from None

    @property
    def signing_key(self) -> SigningKey:
        return self._signing

    @property
    def next_key(self) -> SigningKey | None:
        return self._next

    @property
    def previous_keys(self) -> tuple[SigningKey, ...]:
        return self._previous

    def verification_key(self, kid: str) -> PublicKey | None:
        """The public key for *kid* (next, signing or previous), or None if unknown."""
        for key in self._all_keys():
            if key.kid == kid:
                return key.public_key
        return None

    def public_jwks(self) -> dict[str, list[dict[str, str]]]:
        """The JWK Set to publish: signing, next and previous keys, public members only."""
        return {"keys": [key.public_jwk() for key in self._all_keys()]}

    def to_jwks(self) -> dict[str, list[dict[str, str]]]:
        """The full private JWK Set, in a form :meth:`from_jwks` reads back to the same ring."""
        keys = [self._signing.private_jwk()]
        if self._next is not None:
            keys.append({**self._next.private_jwk(), "status": _STATUS_NEXT})
        keys += [key.private_jwk() for key in self._previous]
        return {"keys": keys}

    def rotated(self, alg: str | None = None) -> KeyRing:
        """Return the ring after one rotation.

        The next key signs, the current signing key becomes the only previous key, and a new next
        key of *alg* (default: the current signing key's) is published. A ring without a next
        key only gains one: a key must be published (for at least the JWKS cache lifetime)
        before it signs, or verifiers holding the cached JWKS would reject its tokens. Changing
        *alg* therefore reaches signing after two rotations.
        """
        new_alg = alg or self._signing.alg
        if self._next is None:
            return KeyRing(self._signing, previous=self._previous, next_key=_generate_key(new_alg))
        return KeyRing(self._next, previous=[self._signing], next_key=_generate_key(new_alg))

    def _all_keys(self) -> list[SigningKey]:
        keys = [self._signing]
        if self._next is not None:
            keys.append(self._next)
        keys += self._previous
        return keys


def write_new_keyfile(path: str | os.PathLike[str]) -> KeyRing:
    """Create a development keyfile (mode 0600) holding one signing key and one next key.

    Refuses to overwrite an existing file (``FileExistsError``): replacing keys logs everyone out.
    """
    ring = KeyRing(_generate_key("RS256"), next_key=_generate_key("RS256"))
    target = Path(path)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    payload = json.dumps(ring.to_jwks(), indent=2) + "\n"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        # The umask can only remove bits; set the mode explicitly so it is exactly 0600.
        os.fchmod(handle.fileno(), 0o600)
        handle.write(payload)
    return ring


def _generate_key(alg: str) -> SigningKey:
    private_key: PrivateKey
    if alg == "RS256":
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=_NEW_RSA_BITS)
    elif alg == "EdDSA":
        private_key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise KeyRingError(_unsupported_alg(alg))
    return SigningKey(
        kid=jwk_thumbprint(_key_to_jwk(private_key.public_key())), alg=alg, private_key=private_key
    )


def _parse_entry(entry: object, position: int) -> tuple[SigningKey, bool]:
    where = f"key #{position + 1}"
    if not isinstance(entry, Mapping):
        raise KeyRingError(f"{where} is not a JSON object")
    kid = entry.get("kid")
    if kid is not None:
        if not isinstance(kid, str) or not kid.strip():
            raise KeyRingError(f'{where}: "kid" must be a non-empty string')
        where = f"{where} (kid {kid!r})"

    status = entry.get("status")
    if status not in (None, _STATUS_NEXT):
        raise KeyRingError(f'{where}: unknown "status" {status!r}; only "next" is recognised')
    use = entry.get("use")
    if use not in (None, "sig"):
        raise KeyRingError(f'{where}: "use" is {use!r}, a signing key needs "sig"')

    kty = entry.get("kty")
    if kty not in _PUBLIC_MEMBERS:
        raise KeyRingError(f'{where}: unsupported "kty" {kty!r}; use "RSA" or "OKP" (Ed25519)')
    if kty == "OKP" and entry.get("crv") != "Ed25519":
        raise KeyRingError(f'{where}: unsupported OKP "crv" {entry.get("crv")!r}; use "Ed25519"')
    expected_alg = "RS256" if kty == "RSA" else "EdDSA"
    alg = entry.get("alg", expected_alg)
    if alg not in SUPPORTED_ALGORITHMS:
        raise KeyRingError(f"{where}: {_unsupported_alg(alg)}")
    if alg != expected_alg:
        raise KeyRingError(f'{where}: "alg" {alg!r} does not fit a {kty} key ({expected_alg})')

    missing = [member for member in _PUBLIC_MEMBERS[kty] if member not in entry]
    if missing:
        raise KeyRingError(f"{where}: missing public member(s) {', '.join(missing)}")
    if "d" not in entry:
        raise KeyRingError(f'{where}: private part missing ("d"); JWT_KEYS needs private keys')

    private_key = _load_private_key(entry, kty, where)
    if isinstance(private_key, rsa.RSAPrivateKey) and private_key.key_size < _MIN_RSA_BITS:
        raise KeyRingError(
            f"{where}: RSA key has {private_key.key_size} bits, at least {_MIN_RSA_BITS} required"
        )
    key_id = kid if kid is not None else jwk_thumbprint(_key_to_jwk(private_key.public_key()))
    return SigningKey(kid=key_id, alg=alg, private_key=private_key), status == _STATUS_NEXT


def _load_private_key(entry: Mapping[str, Any], kty: str, where: str) -> PrivateKey:
    loader = RSAAlgorithm.from_jwk if kty == "RSA" else OKPAlgorithm.from_jwk
    try:
        key = loader(dict(entry))
    except InvalidKeyError as exc:
        # PyJWT's own messages here name the problem, not the key material.
        raise KeyRingError(f"{where}: invalid {kty} key: {exc}") from None
    except Exception:  # noqa: BLE001
        # Messages from base64/cryptography could echo input; keep them out of logs.
        raise KeyRingError(
            f"{where}: invalid {kty} key material (bad encoding or inconsistent numbers)"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise KeyRingError(f"{where}: not a private key")
    return key


def _key_to_jwk(key: PrivateKey | PublicKey) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return RSAAlgorithm.to_jwk(key, as_dict=True)
    return OKPAlgorithm.to_jwk(key, as_dict=True)


def _unsupported_alg(alg: object) -> str:
    return f"unsupported alg {alg!r}; supported: {', '.join(SUPPORTED_ALGORITHMS)}"
