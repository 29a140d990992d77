"""TOTP (RFC 6238, pyotp) rules: enrolment, confirmation with recovery codes, code checks with
replay protection, disabling, and the administrator's reset.

Codes are 6 digits over 30-second steps, accepted one step either side for clock drift. A code is
accepted only for a time step later than the last accepted one (`last_used_step`, updated under a
row lock), so a code cannot be replayed inside its window — nor can an older one be. The two-step
login itself lives in `webapp.auth.service` (it owns sessions and lockout); this module owns the
factor.
"""

from __future__ import annotations

import base64
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyotp
from sqlalchemy import Exists, delete, func, select

from webapp.audit import service as audit
from webapp.auth import lockout, notices, state
from webapp.config import current_settings
from webapp.context import Origin
from webapp.db import DbSession, utcnow
from webapp.errors import Conflict, NotFound, ValidationFailed
from webapp.mfa.models import SECRET_COLUMN, RecoveryCode, TotpFactor
from webapp.security import encryption, passwords
from webapp.security.secrets import hash_token
from webapp.users.models import User

DIGITS = 6
INTERVAL = 30
VALID_WINDOW = 1
RECOVERY_CODE_COUNT = 10
RECOVERY_CODE_BYTES = 10  # 80 bits, 16 base32 characters
_CODE = re.compile(r"^[0-9]{6}$")


@dataclass(frozen=True)
class Enrolment:
    secret: str
    otpauth_uri: str


# --- the secret, encrypted at rest -------------------------------------------------------------


def _seal(user_id: uuid.UUID, secret: str) -> str:
    return encryption.keyring().encrypt(
        secret, table=SECRET_COLUMN.table, column=SECRET_COLUMN.column, row_id=user_id
    )


def _secret_of(factor: TotpFactor) -> str:
    """The plaintext secret; re-encrypted under the newest key when it was sealed under an older
    one (the caller is about to write the row anyway)."""
    ring = encryption.keyring()
    secret = ring.decrypt(
        factor.secret_encrypted,
        table=SECRET_COLUMN.table,
        column=SECRET_COLUMN.column,
        row_id=factor.user_id,
    )
    if not ring.is_current(factor.secret_encrypted):
        factor.secret_encrypted = _seal(factor.user_id, secret)
    return secret


def _totp(secret: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL)


def matching_step(secret: str, code: str, at: datetime) -> int | None:
    """The time step whose code `code` is (within the drift window), or None. Every candidate
    is compared, in constant time, so timing tells nothing about which step was close."""
    if not _CODE.match(code):
        return None
    totp = _totp(secret)
    current = totp.timecode(at)
    matched = None
    for step in range(current - VALID_WINDOW, current + VALID_WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            matched = step
    return matched


def _factor(db: DbSession, user_id: uuid.UUID, *, lock: bool = False) -> TotpFactor | None:
    query = select(TotpFactor).where(TotpFactor.user_id == user_id)
    return db.scalar(query.with_for_update() if lock else query)


def enabled_check(user_id: Any) -> Exists:
    """Whether `user_id` (a value or a correlated column) has a confirmed second factor, to be
    read in the same query as the user."""
    return (
        select(TotpFactor.user_id)
        .where(TotpFactor.user_id == user_id, TotpFactor.confirmed_at.is_not(None))
        .exists()
    )


def is_enabled(db: DbSession, user_id: uuid.UUID) -> bool:
    return bool(db.scalar(select(enabled_check(user_id))))


def status(db: DbSession, user_id: uuid.UUID) -> dict[str, object]:
    factor = _factor(db, user_id)
    remaining = db.scalar(
        select(func.count())
        .select_from(RecoveryCode)
        .where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
    )
    if factor is None:
        totp = "disabled"
    else:
        totp = "enabled" if factor.confirmed_at is not None else "pending"
    return {
        "totp": totp,
        "enabled_at": factor.confirmed_at if factor else None,
        "recovery_codes_remaining": remaining or 0,
    }


def accept_code(db: DbSession, user_id: uuid.UUID, code: str) -> bool:
    """Check a code of the user's active factor and consume its time step (the caller commits)."""
    factor = _factor(db, user_id, lock=True)
    if factor is None or factor.confirmed_at is None:
        return False
    step = matching_step(_secret_of(factor), code, utcnow())
    if step is None or (factor.last_used_step is not None and step <= factor.last_used_step):
        return False
    factor.last_used_step = step
    return True


def _normalize_recovery_code(code: str) -> str:
    return re.sub(r"[\s-]", "", code).lower()


def _recovery_hash(user_id: uuid.UUID, code: str) -> str:
    return hash_token(f"{user_id}:{_normalize_recovery_code(code)}")


def use_recovery_code(db: DbSession, user_id: uuid.UUID, code: str) -> bool:
    """Consume one unused recovery code (the caller commits); False when it is not one."""
    row = db.scalar(
        select(RecoveryCode)
        .where(
            RecoveryCode.code_hash == _recovery_hash(user_id, code),
            RecoveryCode.user_id == user_id,
        )
        .with_for_update()
    )
    if row is None or row.used_at is not None or not is_enabled(db, user_id):
        return False
    row.used_at = utcnow()
    return True


def _new_recovery_codes(db: DbSession, user_id: uuid.UUID) -> list[str]:
    db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = base64.b32encode(secrets.token_bytes(RECOVERY_CODE_BYTES)).decode().lower()
        code = "-".join(raw[i : i + 4] for i in range(0, len(raw), 4))
        db.add(RecoveryCode(user_id=user_id, code_hash=_recovery_hash(user_id, code)))
        codes.append(code)
    return codes


# --- enrolment, confirmation, disabling, reset -------------------------------------------------


def enrol(db: DbSession, origin: Origin, user_id: uuid.UUID) -> Enrolment:
    """A new pending factor (replacing an unconfirmed one); 409 while one is active."""
    user = db.get(User, user_id)
    if user is None:
        raise NotFound("No such user.")
    factor = _factor(db, user_id, lock=True)
    if factor is not None and factor.confirmed_at is not None:
        raise Conflict(
            "Multi-factor authentication is already enabled; disable it first.",
            slug="mfa-already-enabled",
        )
    secret = pyotp.random_base32(length=32)
    if factor is None:
        factor = TotpFactor(user_id=user_id, secret_encrypted=_seal(user_id, secret))
        db.add(factor)
    else:
        factor.secret_encrypted = _seal(user_id, secret)
        factor.last_used_step = None
    audit.record(db, origin, "mfa.enrolment_started", target_type="user", target_id=user_id)
    db.commit()
    uri = _totp(secret).provisioning_uri(name=user.email, issuer_name=current_settings().mfa_issuer)
    return Enrolment(secret=secret, otpauth_uri=uri)


def confirm(db: DbSession, origin: Origin, user_id: uuid.UUID, code: str) -> list[str]:
    """Activate the pending factor with a first code; returns the recovery codes (shown once)."""
    factor = _factor(db, user_id, lock=True)
    if factor is None:
        raise Conflict("Start an enrolment first (POST /auth/mfa/totp).", slug="mfa-not-enrolled")
    if factor.confirmed_at is not None:
        raise Conflict(
            "Multi-factor authentication is already enabled.", slug="mfa-already-enabled"
        )
    step = matching_step(_secret_of(factor), code, utcnow())
    if step is None:
        raise ValidationFailed(
            "The code is incorrect.", slug="invalid-mfa-code", errors={"code": ["is incorrect"]}
        )
    factor.confirmed_at = utcnow()
    factor.last_used_step = step
    codes = _new_recovery_codes(db, user_id)
    audit.record(db, origin, "mfa.enabled", target_type="user", target_id=user_id, method="totp")
    _notify(db, origin, user_id, "totp_enabled")
    db.commit()
    return codes


def regenerate_recovery_codes(db: DbSession, origin: Origin, user_id: uuid.UUID) -> list[str]:
    """Ten new recovery codes (shown once); every earlier one, used or not, stops working."""
    factor = _factor(db, user_id, lock=True)
    if factor is None or factor.confirmed_at is None:
        raise NotFound("Multi-factor authentication is not enabled.", slug="mfa-not-enabled")
    codes = _new_recovery_codes(db, user_id)
    audit.record(
        db, origin, "mfa.recovery_codes_regenerated", target_type="user", target_id=user_id
    )
    _notify(db, origin, user_id, "recovery_codes_regenerated")
    db.commit()
    return codes


def _notify(
    db: DbSession,
    origin: Origin,
    user_id: uuid.UUID,
    event: str,
    details: list[tuple[str, str]] | None = None,
) -> None:
    user = db.get(User, user_id)
    if user is not None:
        notices.notify(
            db, origin, event, recipient=user.email, name=user.name, details=details or []
        )


def _remove(db: DbSession, user_id: uuid.UUID) -> TotpFactor | None:
    """Delete the factor and the recovery codes; returns the factor that was there."""
    factor = _factor(db, user_id, lock=True)
    if factor is not None:
        db.delete(factor)
    db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    return factor


def _was_active(factor: TotpFactor | None) -> bool:
    return factor is not None and factor.confirmed_at is not None


def disable(
    db: DbSession,
    origin: Origin,
    user_id: uuid.UUID,
    *,
    code: str | None = None,
    password: str | None = None,
) -> None:
    """Turn MFA off, proven by a current code or the password. Wrong proofs count towards the
    account lockout, like wrong passwords: a stolen access token must not be a code oracle."""
    user = db.get(User, user_id)
    if user is None or _factor(db, user_id) is None:
        raise NotFound("Multi-factor authentication is not enabled.", slug="mfa-not-enabled")
    lockout.ensure_not_locked(user.email, origin)
    if code is not None:
        factor = _factor(db, user_id, lock=True)
        assert factor is not None
        if factor.confirmed_at is None:
            ok = matching_step(_secret_of(factor), code, utcnow()) is not None
        else:
            ok = accept_code(db, user_id, code)
        field, reason, slug = "code", "invalid_mfa_code", "invalid-mfa-code"
    else:
        ok = passwords.verify_password(user.password_hash or "", password or "").ok
        field, reason, slug = "password", "wrong_current_password", "invalid-current-password"
    if not ok:
        lockout.register_failure(db, user.email, user, origin)
        audit.record(
            db, origin, "auth.login_failed", target_type="user", target_id=user.id, reason=reason
        )
        db.commit()
        raise ValidationFailed(
            f"The {field} is incorrect.", slug=slug, errors={field: ["is incorrect"]}
        )
    removed = _remove(db, user_id)
    lockout.register_success(user.email, origin)
    audit.record(db, origin, "mfa.disabled", target_type="user", target_id=user_id, proof=field)
    if _was_active(removed):
        _notify(db, origin, user_id, "totp_disabled")
    db.commit()
    state.publish_user(user)


def reset(db: DbSession, origin: Origin, user_id: uuid.UUID) -> None:
    """Administrators: remove a user's factor and recovery codes (a lost device)."""
    if db.get(User, user_id) is None:
        raise NotFound("No such user.")
    removed = _remove(db, user_id)
    audit.record(
        db, origin, "mfa.reset", target_type="user", target_id=user_id, had_mfa=removed is not None
    )
    if _was_active(removed):
        _notify(db, origin, user_id, "totp_disabled", [("Removed by", "an administrator")])
    db.commit()
