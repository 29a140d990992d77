"""Consents: the scopes a user allowed a client, remembered per (user, client) so the consent
page is shown again only for a scope not yet allowed. A user lists and revokes their own
(`/api/v1/users/me/oauth-consents`); every grant and revocation is audited. Revoking a consent
takes back what it bought: the user's sessions with that client (their refresh-token families
and the access tokens issued from them) and the client's codes not yet redeemed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import delete, select

from webapp.audit import service as audit
from webapp.auth import sessions, state
from webapp.auth.models import AuthSession
from webapp.context import Origin
from webapp.db import DbSession, utcnow
from webapp.errors import NotFound
from webapp.oauth.browser_models import OAuthConsent
from webapp.oauth.models import OAuthAuthorizationCode, OAuthClient

CONSENT_REVOKED = "consent_revoked"


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


def _end_client_grants(
    db: DbSession, origin: Origin, user_id: uuid.UUID, client_pk: uuid.UUID
) -> list[uuid.UUID]:
    """Revoke the user's live sessions with the client (each audited as `session.revoked`) and
    delete the client's codes for the user that nobody redeemed yet (a code in flight would
    otherwise start a new session after the consent is gone). The caller commits."""
    live = db.scalars(
        select(AuthSession).where(
            AuthSession.user_id == user_id,
            AuthSession.client_pk == client_pk,
            AuthSession.revoked_at.is_(None),
        )
    )
    revoked = sessions.revoke_audited(db, origin, list(live), CONSENT_REVOKED)
    db.execute(
        delete(OAuthAuthorizationCode).where(
            OAuthAuthorizationCode.user_id == user_id,
            OAuthAuthorizationCode.client_pk == client_pk,
            OAuthAuthorizationCode.used_at.is_(None),
        )
    )
    return revoked


def revoke(db: DbSession, origin: Origin, user_id: uuid.UUID, consent_id: uuid.UUID) -> None:
    """Forget a consent of the user's own (404 for anyone else's): the client's next request
    shows the consent page again, and the user's sessions with the client end (their refresh
    tokens stop, introspection and UserInfo refuse their access tokens). Audited as
    `oauth_consent.revoked` (with how many sessions ended) and one `session.revoked` each."""
    consent = db.get(OAuthConsent, consent_id)
    if consent is None or consent.user_id != user_id:
        raise NotFound("No such consent.")
    client = db.get(OAuthClient, consent.client_pk)
    revoked = _end_client_grants(db, origin, user_id, consent.client_pk)
    audit.record(
        db,
        origin,
        "oauth_consent.revoked",
        target_type="oauth_consent",
        target_id=consent.id,
        client_id=client.client_id if client else None,
        scope=consent.scope,
        sessions_revoked=len(revoked),
    )
    db.delete(consent)
    db.commit()
    state.publish_sessions_revoked(revoked)
