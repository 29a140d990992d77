"""Password acceptance policy (NIST SP 800-63B).

Owns the rules a new password must meet: 12 to 128 characters (Unicode code points after NFKC
normalisation), not the account's email address or part of it, and not common or predictable
(zxcvbn score of at least 3 and not in zxcvbn's common-password list). Deliberately no
composition rules ("one digit, one symbol"): NIST advises against them.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping

from zxcvbn import zxcvbn
from zxcvbn.frequency_lists import FREQUENCY_LISTS

from webapp.security.passwords import normalize_password

__all__ = ["MAX_LENGTH", "MIN_LENGTH", "MIN_SCORE", "password_problems"]

MIN_LENGTH = 12
MAX_LENGTH = 128
MIN_SCORE = 3

# zxcvbn's own cost grows with length; beyond this many characters a password is not guessable
# by the patterns it knows anyway.
_ZXCVBN_MAX_CHARS = 100
# A very short local part ("al@example.com") would otherwise forbid every password containing
# those letters; it is still given to zxcvbn, which weighs it against the rest.
_MIN_CONTAINED_PART = 4

_COMMON_PASSWORDS = frozenset(FREQUENCY_LISTS["passwords"])
# zxcvbn stores the user inputs of a call in a module-level dictionary before matching, so two
# threads checking at once could see each other's email and name.
_zxcvbn_lock = threading.Lock()
_WORD_SEPARATORS = re.compile(r"[\s._+\-@]+")


def password_problems(
    password: str, *, email: str | None = None, name: str | None = None
) -> list[str]:
    """Return why *password* is not acceptable, as human-readable messages; empty when it is."""
    candidate = normalize_password(password)
    folded = candidate.casefold()
    problems: list[str] = []

    if len(candidate) < MIN_LENGTH:
        problems.append(f"Password must be at least {MIN_LENGTH} characters long.")
    elif len(candidate) > MAX_LENGTH:
        problems.append(f"Password must be at most {MAX_LENGTH} characters long.")

    user_inputs: list[str] = []
    if email:
        address = normalize_password(email).strip().casefold()
        local_part = address.rpartition("@")[0] or address
        if address in folded or (len(local_part) >= _MIN_CONTAINED_PART and local_part in folded):
            problems.append("Password must not contain your email address.")
        user_inputs += [address, local_part, *_words(local_part)]
    if name:
        normalized_name = normalize_password(name).strip().casefold()
        user_inputs += [normalized_name, *_words(normalized_name)]

    if folded in _COMMON_PASSWORDS:
        problems.append("Password is on a list of commonly used passwords.")
    elif candidate:  # zxcvbn 4.5 crashes on the empty string; the length rule covers it
        with _zxcvbn_lock:
            result = zxcvbn(
                candidate[:_ZXCVBN_MAX_CHARS],
                user_inputs=user_inputs,
                max_length=_ZXCVBN_MAX_CHARS,
            )
        if result["score"] < MIN_SCORE:
            problems.append(_weakness_message(result["feedback"]))
    return problems


def _words(text: str) -> list[str]:
    return [word for word in _WORD_SEPARATORS.split(text) if word]


def _weakness_message(feedback: Mapping[str, object]) -> str:
    message = "Password is too easy to guess."
    warning = feedback.get("warning")
    if isinstance(warning, str) and warning:
        message += f" {warning}"
    suggestions = feedback.get("suggestions")
    if isinstance(suggestions, list) and suggestions:
        message += " " + " ".join(str(s) for s in suggestions)
    return message
