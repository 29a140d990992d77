"""Imports every model so that the metadata (and Alembic autogenerate) sees the whole schema."""

from pathlib import Path

from webapp.apikeys.models import ApiKey
from webapp.audit.models import AuditEvent
from webapp.auth.models import AuthSession, OneTimeToken, RefreshToken
from webapp.events.models import DomainEvent
from webapp.http.idempotency_records import IdempotencyRecord
from webapp.mfa.models import RecoveryCode, TotpFactor
from webapp.oauth.browser_models import OAuthBrowserSession, OAuthConsent
from webapp.oauth.models import OAuthAuthorizationCode, OAuthClient
from webapp.ops.models import BackupRun
from webapp.outbox.models import OutboxMessage
from webapp.users.models import User
from webapp.webhooks.models import WebhookAttempt, WebhookEndpoint

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

__all__ = [
    "ApiKey",
    "AuditEvent",
    "AuthSession",
    "BackupRun",
    "DomainEvent",
    "IdempotencyRecord",
    "OAuthAuthorizationCode",
    "OAuthBrowserSession",
    "OAuthClient",
    "OAuthConsent",
    "OneTimeToken",
    "OutboxMessage",
    "RecoveryCode",
    "RefreshToken",
    "TotpFactor",
    "User",
    "WebhookAttempt",
    "WebhookEndpoint",
]
