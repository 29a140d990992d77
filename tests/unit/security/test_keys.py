import json
import os
import stat

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from jwt.algorithms import RSAAlgorithm

from webapp.security.keys import (
    SUPPORTED_ALGORITHMS,
    KeyRing,
    KeyRingError,
    generate_jwk,
    jwk_thumbprint,
    write_new_keyfile,
)

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi"}
RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJEC"
    "PebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2"
    "QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQ"
    "Fh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)


@pytest.fixture(scope="module")
def rsa_jwk():
    return generate_jwk("RS256")


@pytest.fixture(scope="module")
def rsa_jwk_2():
    return generate_jwk("RS256")


@pytest.fixture(scope="module")
def ed_jwk():
    return generate_jwk("EdDSA")


def _sign(ring: KeyRing, sub: str = "user-1") -> str:
    key = ring.signing_key
    return jwt.encode({"sub": sub}, key.private_key, algorithm=key.alg, headers={"kid": key.kid})


def _verify(ring: KeyRing, token: str) -> dict:
    kid = jwt.get_unverified_header(token)["kid"]
    public = ring.verification_key(kid)
    assert public is not None, f"kid {kid} unknown to the ring"
    return jwt.decode(token, public, algorithms=list(SUPPORTED_ALGORITHMS))


def _verify_with_published(jwks: dict, token: str) -> dict:
    # What an offline verifier does with a cached copy of /.well-known/jwks.json.
    kid = jwt.get_unverified_header(token)["kid"]
    (entry,) = [k for k in jwks["keys"] if k["kid"] == kid]
    return jwt.decode(token, jwt.PyJWK(entry).key, algorithms=list(SUPPORTED_ALGORITHMS))


def test_rfc7638_thumbprint_example():
    jwk = {"kty": "RSA", "n": RFC7638_N, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"}

    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_generate_rs256_jwk(rsa_jwk):
    assert rsa_jwk["kty"] == "RSA"
    assert rsa_jwk["alg"] == "RS256"
    assert rsa_jwk["use"] == "sig"
    assert rsa_jwk["kid"] == jwk_thumbprint(rsa_jwk)
    assert rsa_jwk.keys() >= PRIVATE_MEMBERS
    key = RSAAlgorithm.from_jwk(rsa_jwk)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048


def test_generate_eddsa_jwk(ed_jwk):
    assert ed_jwk["kty"] == "OKP"
    assert ed_jwk["crv"] == "Ed25519"
    assert ed_jwk["alg"] == "EdDSA"
    assert ed_jwk["use"] == "sig"
    assert ed_jwk["kid"] == jwk_thumbprint(ed_jwk)
    assert "d" in ed_jwk


def test_generate_rejects_unsupported_alg():
    with pytest.raises(KeyRingError, match="HS256"):
        generate_jwk("HS256")


def test_first_key_not_marked_next_signs(rsa_jwk, rsa_jwk_2, ed_jwk):
    ring = KeyRing.from_jwks(
        {"keys": [{**ed_jwk, "status": "next"}, rsa_jwk, rsa_jwk_2]},
    )

    assert ring.signing_key.kid == rsa_jwk["kid"]
    assert ring.signing_key.alg == "RS256"
    assert isinstance(ring.signing_key.private_key, rsa.RSAPrivateKey)
    assert ring.next_key is not None
    assert ring.next_key.kid == ed_jwk["kid"]
    assert [k.kid for k in ring.previous_keys] == [rsa_jwk_2["kid"]]


def test_every_key_verifies_tokens_it_signed(rsa_jwk, ed_jwk):
    for jwk in (rsa_jwk, ed_jwk):
        ring = KeyRing.from_jwks({"keys": [jwk]})
        assert _verify(ring, _sign(ring))["sub"] == "user-1"


def test_unknown_kid_has_no_verification_key(rsa_jwk):
    ring = KeyRing.from_jwks({"keys": [rsa_jwk]})

    assert ring.verification_key("no-such-kid") is None


def test_public_jwks_publishes_next_current_previous_without_private_members(
    rsa_jwk, rsa_jwk_2, ed_jwk
):
    ring = KeyRing.from_jwks({"keys": [rsa_jwk, {**ed_jwk, "status": "next"}, rsa_jwk_2]})

    published = ring.public_jwks()

    assert {k["kid"] for k in published["keys"]} == {
        rsa_jwk["kid"],
        rsa_jwk_2["kid"],
        ed_jwk["kid"],
    }
    for entry in published["keys"]:
        assert not (PRIVATE_MEMBERS & entry.keys()), entry["kid"]
        assert "status" not in entry
        assert entry["use"] == "sig"
        assert entry["alg"] in SUPPORTED_ALGORITHMS
        assert isinstance(jwt.PyJWK(entry).key, rsa.RSAPublicKey | ed25519.Ed25519PublicKey), (
            "published entries must be usable public keys"
        )
    json.dumps(published)  # serialisable as-is


def test_rotation_logs_no_one_out_and_next_key_was_published_before_it_signs(rsa_jwk):
    before = KeyRing.from_jwks({"keys": [rsa_jwk]}).rotated()  # gains a next key
    published_before = before.public_jwks()
    old_token = _sign(before, "old")

    after = before.rotated()
    new_token = _sign(after, "new")

    assert before.next_key is not None
    assert after.signing_key.kid == before.next_key.kid
    assert after.signing_key.kid in {k["kid"] for k in published_before["keys"]}
    # A verifier holding the JWKS cached before the rotation accepts the new tokens...
    assert _verify_with_published(published_before, new_token)["sub"] == "new"
    # ...and tokens signed before the rotation still verify against the rotated ring.
    assert _verify(after, old_token)["sub"] == "old"
    assert _verify_with_published(after.public_jwks(), old_token)["sub"] == "old"
    assert [k.kid for k in after.previous_keys] == [before.signing_key.kid]
    assert after.next_key is not None
    assert after.next_key.kid not in {k["kid"] for k in published_before["keys"]}


def test_rotation_keeps_exactly_one_previous_key(rsa_jwk, rsa_jwk_2):
    ring = KeyRing.from_jwks({"keys": [rsa_jwk, rsa_jwk_2]})
    first_signer = ring.signing_key.kid

    staged = ring.rotated()  # no next key yet: only publishes one
    once = staged.rotated()
    twice = once.rotated()

    assert [k.kid for k in once.previous_keys] == [first_signer]
    assert [k.kid for k in twice.previous_keys] == [once.signing_key.kid]
    assert twice.verification_key(first_signer) is None
    assert twice.verification_key(rsa_jwk_2["kid"]) is None
    assert len(twice.public_jwks()["keys"]) == 3


def test_rotation_without_next_key_only_publishes_one_and_keeps_signing(rsa_jwk):
    ring = KeyRing.from_jwks({"keys": [rsa_jwk]})

    rotated = ring.rotated()

    # A key that was never published must not sign: the first rotation only stages a next key.
    assert rotated.signing_key.kid == rsa_jwk["kid"]
    assert rotated.next_key is not None
    assert rotated.next_key.kid in {k["kid"] for k in rotated.public_jwks()["keys"]}
    assert rotated.previous_keys == ()
    assert rotated.rotated().signing_key.kid == rotated.next_key.kid


def test_rotation_can_change_algorithm_one_step_ahead(rsa_jwk, rsa_jwk_2):
    ring = KeyRing.from_jwks({"keys": [rsa_jwk, {**rsa_jwk_2, "status": "next"}]})

    rotated = ring.rotated(alg="EdDSA")

    assert rotated.signing_key.alg == "RS256"  # the already-published next key
    assert rotated.next_key is not None
    assert rotated.next_key.alg == "EdDSA"
    assert rotated.rotated().signing_key.alg == "EdDSA"


def test_to_jwks_round_trips(rsa_jwk, rsa_jwk_2, ed_jwk):
    ring = KeyRing.from_jwks({"keys": [rsa_jwk, {**ed_jwk, "status": "next"}, rsa_jwk_2]})

    reloaded = KeyRing.from_jwks(json.loads(json.dumps(ring.to_jwks())))

    assert reloaded.signing_key.kid == ring.signing_key.kid
    assert reloaded.next_key is not None
    assert ring.next_key is not None
    assert reloaded.next_key.kid == ring.next_key.kid
    assert [k.kid for k in reloaded.previous_keys] == [k.kid for k in ring.previous_keys]
    assert _verify(reloaded, _sign(ring))["sub"] == "user-1"


def test_kid_defaults_to_thumbprint(ed_jwk):
    without_kid = {k: v for k, v in ed_jwk.items() if k != "kid"}

    assert KeyRing.from_jwks({"keys": [without_kid]}).signing_key.kid == ed_jwk["kid"]


def _small_rsa_jwk() -> dict:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - deliberately too small
    return {**RSAAlgorithm.to_jwk(key, as_dict=True), "kid": "small", "alg": "RS256"}


def _public_only(jwk: dict) -> dict:
    return {k: v for k, v in jwk.items() if k not in PRIVATE_MEMBERS}


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda a, b, e: ["not", "a", "set"], "JWK Set"),
        (lambda a, b, e: a, "single JWK"),
        (lambda a, b, e: {"keys": []}, "non-empty"),
        (lambda a, b, e: {"keys": "nope"}, "non-empty list"),
        (lambda a, b, e: {"keys": [42]}, "key #1 is not a JSON object"),
        (lambda a, b, e: {"keys": [_public_only(a)]}, "private part missing"),
        (lambda a, b, e: {"keys": [{**a, "alg": "HS256"}]}, "unsupported alg 'HS256'"),
        (lambda a, b, e: {"keys": [{**a, "alg": "EdDSA"}]}, "does not fit a RSA key"),
        (lambda a, b, e: {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}, 'unsupported "kty"'),
        (lambda a, b, e: {"keys": [{**e, "crv": "Ed448"}]}, "Ed25519"),
        (lambda a, b, e: {"keys": [_small_rsa_jwk()]}, "1024 bits, at least 2048"),
        (lambda a, b, e: {"keys": [a, {**b, "kid": a["kid"]}]}, "duplicate kid"),
        (lambda a, b, e: {"keys": [{**a, "status": "next"}]}, "no signing key"),
        (
            lambda a, b, e: {"keys": [a, {**b, "status": "next"}, {**e, "status": "next"}]},
            "more than one key",
        ),
        (lambda a, b, e: {"keys": [{**a, "status": "retired"}]}, 'unknown "status"'),
        (lambda a, b, e: {"keys": [{**a, "use": "enc"}]}, "\"use\" is 'enc'"),
        (lambda a, b, e: {"keys": [{**a, "kid": ""}]}, "non-empty string"),
        (lambda a, b, e: {"keys": [{**e, "x": b["n"][:43]}]}, "does not match private key"),
        (lambda a, b, e: {"keys": [{**a, "d": "!!not base64!!"}]}, "invalid RSA key"),
        (lambda a, b, e: {"keys": [{**a, "dp": None, "dq": None}]}, "invalid RSA key"),
        (lambda a, b, e: {"keys": [{k: v for k, v in a.items() if k != "n"}]}, "missing public"),
    ],
)
def test_malformed_jwks_is_rejected_with_a_useful_message(
    rsa_jwk, rsa_jwk_2, ed_jwk, build, message
):
    data = build(rsa_jwk, rsa_jwk_2, ed_jwk)

    with pytest.raises(KeyRingError) as caught:
        KeyRing.from_jwks(data)

    assert message in str(caught.value)
    for secret in (rsa_jwk["d"], rsa_jwk["p"], ed_jwk["d"]):
        assert secret not in str(caught.value)


def test_load_from_json_string(rsa_jwk):
    ring = KeyRing.load(json.dumps({"keys": [rsa_jwk]}), None)

    assert ring.signing_key.kid == rsa_jwk["kid"]


def test_load_from_file(tmp_path, rsa_jwk):
    path = tmp_path / "jwt-keys.json"
    path.write_text(json.dumps({"keys": [rsa_jwk]}))

    assert KeyRing.load(None, str(path)).signing_key.kid == rsa_jwk["kid"]


@pytest.mark.parametrize(
    ("keys_json", "keys_file", "message"),
    [
        (None, None, "neither is set"),
        ("", "  ", "neither is set"),
        ('{"keys": []}', "/some/file", "both are set"),
    ],
)
def test_load_needs_exactly_one_source(keys_json, keys_file, message):
    with pytest.raises(KeyRingError, match=message) as caught:
        KeyRing.load(keys_json, keys_file)

    assert "JWT_KEYS" in str(caught.value)
    assert "JWT_KEYS_FILE" in str(caught.value)


def test_load_invalid_json_names_the_setting_but_not_the_key(rsa_jwk):
    broken = json.dumps({"keys": [rsa_jwk]})[:-5]

    with pytest.raises(KeyRingError, match=r"^JWT_KEYS is not valid JSON") as caught:
        KeyRing.load(broken, None)

    assert rsa_jwk["d"] not in str(caught.value)


def test_load_validation_error_names_the_file(tmp_path, rsa_jwk):
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": [_public_only(rsa_jwk)]}))

    with pytest.raises(KeyRingError, match=r"^JWT_KEYS_FILE '.*keys\.json': .*private part"):
        KeyRing.load(None, str(path))


def test_load_missing_file(tmp_path):
    with pytest.raises(KeyRingError, match=r"JWT_KEYS_FILE .* does not exist"):
        KeyRing.load(None, str(tmp_path / "absent.json"))


def test_write_new_keyfile_is_private_and_loadable(tmp_path):
    path = tmp_path / "dev" / "jwt-keys.json"
    previous_umask = os.umask(0)  # even a permissive umask must not widen the mode
    try:
        ring = write_new_keyfile(path)
    finally:
        os.umask(previous_umask)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = KeyRing.load(None, str(path))
    assert loaded.signing_key.kid == ring.signing_key.kid
    assert loaded.next_key is not None
    assert ring.next_key is not None
    assert loaded.next_key.kid == ring.next_key.kid
    assert loaded.previous_keys == ()
    assert _verify(loaded, _sign(ring))["sub"] == "user-1"


def test_write_new_keyfile_refuses_to_overwrite(tmp_path):
    path = tmp_path / "jwt-keys.json"
    path.write_text("existing")

    with pytest.raises(FileExistsError):
        write_new_keyfile(path)

    assert path.read_text() == "existing"
