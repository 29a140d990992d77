"""Consents: the scopes a user allowed a client, remembered per (user, client) so the consent
page is shown again only for a scope not yet allowed. A user lists and revokes their own
(`/api/v1/users/me/oauth-consents`); every grant and revocation is audited."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select

from webapp.audit import service as audit
from webapp.context import Origin
from webapp.db import DbSession, utcnow
from webapp.errors import NotFound
from webapp.oauth.browser_models import OAuthConsent
from webapp.oauth.models import OAuthClient


@dataclass(frozen=True)
class ConsentView:
    consent: OAuthConsent
    client: OAuthClient


def _find(db: DbSession, user_id: uuid.UUID, client: OAuthClient) -> OAuthConsent | None:
    return db.scalar(
        select(OAuthConsent).where(
            OAuthConsent.user_id == user_id, OAuthConsent.client_pk == client.id
        )
    )


def covers(db: DbSession, user_id: uuid.UUID, client: OAuthClient, scopes: list[str]) -> bool:
    """Whether the user has already allowed every one of `scopes` to `client`."""
    consent = _find(db, user_id, client)
    return consent is not None and set(scopes) <= set(consent.scopes)


def grant(
    db: DbSession, origin: Origin, user_id: uuid.UUID, client: OAuthClient, scopes: list[str]
) -> OAuthConsent:
    """Remember that the user allowed `scopes` (added to what they allowed before); audited as
    `oauth_consent.granted`. The caller commits (with the code it issues)."""
    consent = _find(db, user_id, client)
    now = utcnow()
    if consent is None:
        consent = OAuthConsent(
            id=uuid.uuid4(), user_id=user_id, client_pk=client.id, scope="", created_at=now
        )
        db.add(consent)
    merged = list(dict.fromkeys([*consent.scopes, *scopes]))
    consent.scope = " ".join(merged)
    consent.updated_at = now
    audit.record(
        db,
        origin.acting_as(user_id),
        "oauth_consent.granted",
        target_type="oauth_consent",
        target_id=consent.id,
        client_id=client.client_id,
        scope=consent.scope,
    )
    return consent


def list_consents(db: DbSession, user_id: uuid.UUID) -> list[ConsentView]:
    rows = db.execute(
        select(OAuthConsent, OAuthClient)
        .join(OAuthClient, OAuthClient.id == OAuthConsent.client_pk)
        .where(OAuthConsent.user_id == user_id)
        .order_by(OAuthConsent.created_at.desc(), OAuthConsent.id)
    ).all()
    return [ConsentView(consent, client) for consent, client in rows]


def revoke(db: DbSession, origin: Origin, user_id: uuid.UUID, consent_id: uuid.UUID) -> None:
    """Forget a consent of the user's own (404 for anyone else's): the client's next request
    shows the consent page again. Audited as `oauth_consent.revoked`."""
    consent = db.get(OAuthConsent, consent_id)
    if consent is None or consent.user_id != user_id:
        raise NotFound("No such consent.")
    client = db.get(OAuthClient, consent.client_pk)
    audit.record(
        db,
        origin,
        "oauth_consent.revoked",
        target_type="oauth_consent",
        target_id=consent.id,
        client_id=client.client_id if client else None,
        scope=consent.scope,
    )
    db.delete(consent)
    db.commit()
