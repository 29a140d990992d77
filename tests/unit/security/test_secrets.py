import base64
import hashlib
import re

from webapp.security.secrets import hash_token, new_token


def test_new_token_is_url_safe_with_at_least_256_bits():
    plaintext, _ = new_token()

    assert re.fullmatch(r"[A-Za-z0-9_-]+", plaintext)
    raw = base64.urlsafe_b64decode(plaintext + "=" * (-len(plaintext) % 4))
    assert len(raw) * 8 >= 256


def test_new_token_returns_the_sha256_hex_of_the_plaintext():
    plaintext, digest = new_token()

    assert digest == hashlib.sha256(plaintext.encode()).hexdigest()
    assert digest == hash_token(plaintext)
    assert plaintext not in digest


def test_tokens_are_unique():
    tokens = {new_token()[0] for _ in range(100)}

    assert len(tokens) == 100


def test_hash_token_is_deterministic_and_distinguishes_tokens():
    assert hash_token("abc") == hash_token("abc")
    assert hash_token("abc") != hash_token("abd")
    assert hash_token("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
