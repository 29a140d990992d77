"""Is a configured secret random enough? The rule production applies to SECRET_KEY, API_KEY_PEPPER
and each ENCRYPTION_KEYS key.

A true entropy measurement of one value is impossible; these checks only refuse values that are
obviously not random, and they are tuned so that a value made by `secrets.token_urlsafe(32)`,
`secrets.token_hex(32)` or `os.urandom(32)` is never refused (tests/unit/security: many random
samples). A value is refused when, over its bytes:

- it repeats a shorter block (`'A' * 32`, an all-zero key, `'abc' * 11`, `'0123456789' * 4`);
- it has fewer than `MIN_DISTINCT` different byte values;
- the Shannon entropy of its byte frequencies is under `MIN_BITS_PER_BYTE`
  (`'test-secret-' + 'x' * 32` has 1.5 bits per byte; random 32-byte values have over 4).

A binary key (AES) is also refused when every byte is printable ASCII: that is a passphrase, not
32 random bytes (a random key is all printable with a probability of about 1e-14).

The reasons name a defect, never the value, so they can go into an error message.
"""

from __future__ import annotations

import math
from collections import Counter

__all__ = ["MIN_BITS_PER_BYTE", "MIN_DISTINCT", "key_weakness", "secret_weakness"]

MIN_DISTINCT = 8
# Random 32-character hex strings, the weakest common generator output accepted as SECRET_KEY,
# never went under 2.79 bits per byte in 200,000 samples.
MIN_BITS_PER_BYTE = 2.5


def _period(data: bytes) -> int | None:
    """The length of the shortest block that `data` repeats (at least twice), if any."""
    for period in range(1, len(data) // 2 + 1):
        if data[period:] == data[:-period]:
            return period
    return None


def bits_per_byte(data: bytes) -> float:
    """Shannon entropy of the byte frequencies of `data` (0 to 8)."""
    if not data:
        return 0.0
    total = len(data)
    return -sum(n / total * math.log2(n / total) for n in Counter(data).values())


def secret_weakness(data: bytes) -> str | None:
    """Why `data` is evidently not random, or None. Never quotes the value."""
    if not data:
        return "is empty"
    period = _period(data)
    if period == 1:
        return "repeats a single character"
    if period is not None:
        return f"repeats a block of {period} characters"
    if len(set(data)) < MIN_DISTINCT:
        return f"has fewer than {MIN_DISTINCT} different characters"
    if bits_per_byte(data) < MIN_BITS_PER_BYTE:
        return f"has an entropy under {MIN_BITS_PER_BYTE} bits per character"
    return None


def key_weakness(key: bytes) -> str | None:
    """`secret_weakness` for raw key bytes, which must not be plain text either."""
    reason = secret_weakness(key)
    if reason is not None:
        return reason.replace("characters", "bytes").replace("character", "byte")
    if all(0x20 <= byte < 0x7F for byte in key):
        return "decodes to printable text (a passphrase), not random bytes"
    return None
