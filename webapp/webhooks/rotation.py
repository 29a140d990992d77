"""Rotating an endpoint's signing secret with an overlap.

A rotation mints a new `whsec_…` secret (returned once, like at creation) and keeps the one it
replaces, sealed under its own column name, for WEBHOOK_SECRET_OVERLAP seconds: deliveries are
signed with both meanwhile, so a consumer can switch its secret at any moment in that window
without refusing a delivery. Two slots only: a second rotation inside the overlap drops the
oldest secret at once.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from webapp.audit import service as audit
from webapp.config import current_settings
from webapp.context import Origin
from webapp.db import DbSession, aware, utcnow
from webapp.webhooks import signing
from webapp.webhooks.models import PREVIOUS_SECRET_COLUMN, WebhookEndpoint
from webapp.webhooks.service import Issued, locked, seal, secret_of, unseal


def previous_secret_valid_until(
    endpoint: WebhookEndpoint, now: datetime | None = None
) -> datetime | None:
    """Until when the previous secret still signs; None when there is none (or it ended)."""
    deadline = endpoint.previous_secret_expires_at
    if endpoint.previous_secret_encrypted is None or deadline is None:
        return None
    deadline = aware(deadline)
    return deadline if deadline > (now or utcnow()) else None


def signing_secrets(endpoint: WebhookEndpoint, now: datetime | None = None) -> list[str]:
    """The secrets a delivery is signed with now: the current one, and the previous one during
    its overlap. Raises DecryptionError when a key left ENCRYPTION_KEYS."""
    secrets = [secret_of(endpoint)]
    previous = endpoint.previous_secret_encrypted
    if previous is not None and previous_secret_valid_until(endpoint, now) is not None:
        secrets.append(unseal(endpoint.id, previous, PREVIOUS_SECRET_COLUMN))
    return secrets


def rotate_secret(
    db: DbSession, origin: Origin, endpoint_id: uuid.UUID, *, if_match: str | None = None
) -> Issued:
    """A new secret; the current one keeps signing beside it for WEBHOOK_SECRET_OVERLAP seconds
    (0: not at all). Audited without either secret."""
    endpoint = locked(db, endpoint_id, if_match)
    now = utcnow()
    overlap = current_settings().webhook_secret_overlap
    current = secret_of(endpoint)
    secret = signing.new_secret()
    if overlap:
        endpoint.previous_secret_encrypted = seal(endpoint.id, current, PREVIOUS_SECRET_COLUMN)
        endpoint.previous_secret_expires_at = now + timedelta(seconds=overlap)
    else:
        endpoint.previous_secret_encrypted = None
        endpoint.previous_secret_expires_at = None
    endpoint.secret_encrypted = seal(endpoint.id, secret)
    endpoint.secret_rotated_at = now
    audit.record(
        db,
        origin,
        "webhook.secret_rotated",
        target_type="webhook",
        target_id=endpoint.id,
        url=endpoint.url,
        previous_secret_valid_until=(
            endpoint.previous_secret_expires_at.isoformat()
            if endpoint.previous_secret_expires_at
            else None
        ),
    )
    db.commit()
    return Issued(endpoint, secret)
