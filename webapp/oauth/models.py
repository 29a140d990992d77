"""OAuth clients (RFC 7591 metadata names) and authorization codes.

A client's secret is never stored: only a keyed hash (see `webapp.oauth.credentials`). A
rotation moves the current hash to `previous_secret_hash`, valid until `previous_secret_expires_at`,
so a client can switch secrets without downtime. The model implements Authlib's `ClientMixin`
and `AuthorizationCodeMixin` interfaces by name (Authlib calls these methods; it does not need the
base classes, whose SQLAlchemy versions would store the secret in plain text).

An authorization code is stored as a hash too, lives at most `CODE_TTL` seconds, is single use
(`used_at`), and is bound to its client, redirect URI and PKCE challenge.
"""

from __future__ import annotations

import hmac
import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from webapp.db import Base, JSONType, new_id, utcnow
from webapp.oauth import credentials

PUBLIC = "none"
CODE_TTL = 60  # seconds; OAuth 2.1 §4.1.2 recommends at most 10 minutes, OIDC a short lifetime


class OAuthClient(Base):
    __tablename__ = "oauth_clients"
    __table_args__ = (Index("uq_oauth_clients_client_id", "client_id", unique=True),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    client_id: Mapped[str] = mapped_column(String(64))
    client_name: Mapped[str] = mapped_column(String(100))
    redirect_uris: Mapped[list[str]] = mapped_column(JSONType, default=list)
    post_logout_redirect_uris: Mapped[list[str]] = mapped_column(JSONType, default=list)
    grant_types: Mapped[list[str]] = mapped_column(JSONType, default=list)
    response_types: Mapped[list[str]] = mapped_column(JSONType, default=list)
    scope: Mapped[str] = mapped_column(Text, default="")
    token_endpoint_auth_method: Mapped[str] = mapped_column(String(32))
    first_party: Mapped[bool] = mapped_column(default=False)
    secret_hash: Mapped[str | None] = mapped_column(String(64))
    previous_secret_hash: Mapped[str | None] = mapped_column(String(64))
    previous_secret_expires_at: Mapped[datetime | None]
    secret_rotated_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    version: Mapped[int] = mapped_column(default=1)

    @property
    def is_public(self) -> bool:
        return self.token_endpoint_auth_method == PUBLIC

    @property
    def scopes(self) -> list[str]:
        return self.scope.split()

    # --- Authlib's ClientMixin ------------------------------------------------------------------

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        # Only when exactly one is registered: with several, the request must name one.
        return self.redirect_uris[0] if len(self.redirect_uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str:
        if not scope:
            return ""
        allowed = set(self.scopes)
        return " ".join(s for s in scope.split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris  # exact string match (OAuth 2.1 §2.3.1)

    def check_client_secret(self, client_secret: str, now: datetime | None = None) -> bool:
        """The current secret, or the previous one until its overlap ends; constant time."""
        if self.secret_hash is None:
            return False
        digest = credentials.hash_secret(self.client_id, client_secret)
        matched = hmac.compare_digest(digest, self.secret_hash)
        previous, deadline = self.previous_secret_hash, self.previous_secret_expires_at
        if previous is not None and deadline is not None and deadline > (now or utcnow()):
            matched = hmac.compare_digest(digest, previous) or matched
        return matched

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if endpoint == "token":
            return method == self.token_endpoint_auth_method
        # Revocation and introspection need a confidential client.
        return not self.is_public and method == self.token_endpoint_auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type in self.response_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


class OAuthAuthorizationCode(Base):
    __tablename__ = "oauth_authorization_codes"
    __table_args__ = (
        Index("uq_oauth_authorization_codes_code_hash", "code_hash", unique=True),
        Index("ix_oauth_authorization_codes_expires_at", "expires_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    code_hash: Mapped[str] = mapped_column(String(64))
    client_pk: Mapped[uuid.UUID] = mapped_column(ForeignKey("oauth_clients.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    redirect_uri: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(Text, default="")
    code_challenge: Mapped[str] = mapped_column(String(128))
    code_challenge_method: Mapped[str] = mapped_column(String(8))
    nonce: Mapped[str | None] = mapped_column(Text)
    auth_time: Mapped[datetime]
    amr: Mapped[list[str]] = mapped_column(JSONType, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    # The session the redemption started: a second presentation of the code revokes it.
    session_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("sessions.id", ondelete="SET NULL")
    )

    # --- Authlib's AuthorizationCodeMixin (and the OIDC additions) ------------------------------

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return int(self.auth_time.timestamp())

    def get_acr(self) -> str | None:
        return None

    def get_amr(self) -> list[str]:
        return list(self.amr)
