"""The rules of `Settings.validate()`: those between settings, and production's refusals of the
development defaults and of weak secrets. Each failure is a `ConfigError` naming the variable,
never its value."""

from __future__ import annotations

import re
from typing import Protocol
from urllib.parse import urlsplit

from webapp.config.base import ConfigError
from webapp.security.encryption import EncryptionKeyRing
from webapp.security.entropy import key_weakness, secret_weakness

# Development defaults of `Settings` that production refuses.
DEV_SECRET = "dev-insecure-secret-change-me"  # noqa: S105 - the default production refuses
DEV_KEYS_FILE = "instance/jwt-keys.json"


# Values that were published (defaults in this repository, now or in the past): production refuses
# them even where they would pass the randomness checks.
PUBLISHED_SECRETS = frozenset({DEV_SECRET, "compose-local-only-not-a-real-secret-0123456789"})
# Refresh-token reuse inside the grace window is not detected; keep that window to a client's
# concurrent-refresh race, not hours of replay.
MAX_PRODUCTION_REUSE_GRACE = 60
_ORIGIN = re.compile(r"https://[A-Za-z0-9.-]+(:[0-9]{1,5})?")


class Checked(Protocol):
    """What the rules read of `Settings`: described here rather than imported, as `Settings`
    calls these rules (an import back would close a circle)."""

    secret_key: str
    public_base_url: str
    cors_origins: tuple[str, ...]
    database_url: str
    redis_url: str | None
    jwt_keys: str | None
    jwt_keys_file: str | None
    access_token_ttl: int
    refresh_token_ttl: int
    session_idle_ttl: int
    remember_me_ttl: int
    remember_me_idle_ttl: int
    refresh_reuse_grace: int
    email_token_ttl: int
    unverified_account_ttl: int
    ratelimit_enabled: bool
    unsafe_production_without_ratelimit: bool
    encryption_keys: str | None
    api_key_pepper: str | None
    webhook_allow_private: bool
    pact_provider_states: bool

    @property
    def effective_oidc_issuer(self) -> str: ...


def validate_relations(settings: Checked) -> None:
    """The rules that involve more than one setting."""
    if settings.unverified_account_ttl < settings.email_token_ttl:
        # Otherwise a sign-up could expire while its verification link still works.
        raise ConfigError("UNVERIFIED_ACCOUNT_TTL must not be shorter than EMAIL_TOKEN_TTL")
    _validate_session_lifetimes(settings)
    if settings.jwt_keys and settings.jwt_keys_file:
        raise ConfigError("set JWT_KEYS or JWT_KEYS_FILE, not both")


def _validate_session_lifetimes(settings: Checked) -> None:
    """Idleness is enforced when a refresh token is exchanged, so an access token must
    expire before the shortest idle deadline, and no idle deadline outlives its session."""
    if settings.access_token_ttl >= settings.refresh_token_ttl:
        raise ConfigError("ACCESS_TOKEN_TTL must be shorter than REFRESH_TOKEN_TTL")
    if settings.access_token_ttl >= min(settings.session_idle_ttl, settings.remember_me_idle_ttl):
        raise ConfigError(
            "ACCESS_TOKEN_TTL must be shorter than SESSION_IDLE_TTL and REMEMBER_ME_IDLE_TTL"
        )
    if settings.session_idle_ttl > settings.refresh_token_ttl:
        raise ConfigError("SESSION_IDLE_TTL must not exceed REFRESH_TOKEN_TTL")
    if settings.remember_me_idle_ttl > settings.remember_me_ttl:
        raise ConfigError("REMEMBER_ME_IDLE_TTL must not exceed REMEMBER_ME_TTL")


def validate_production(settings: Checked) -> None:
    """Production's refusals: the development defaults, weak secrets, clear-text URLs and the
    switches that turn a safeguard off."""
    if settings.secret_key in PUBLISHED_SECRETS or len(settings.secret_key) < 32:
        raise ConfigError(
            "SECRET_KEY must be set to a random value of 32+ characters in production"
        )
    _refuse_weak_secret("SECRET_KEY", settings.secret_key)
    if not (settings.jwt_keys or settings.jwt_keys_file):
        raise ConfigError("JWT_KEYS or JWT_KEYS_FILE must be set in production")
    if settings.jwt_keys_file == DEV_KEYS_FILE:
        raise ConfigError("JWT_KEYS_FILE must not be the development key file in production")
    if settings.database_url.startswith("sqlite"):
        raise ConfigError("DATABASE_URL must point to PostgreSQL in production")
    if not settings.redis_url:
        raise ConfigError("REDIS_URL must be set in production")
    public = urlsplit(settings.public_base_url)
    if public.scheme != "https" or not public.hostname:
        # Emailed reset and verification links carry single-use tokens: never in clear text.
        raise ConfigError("PUBLIC_BASE_URL must be an https:// URL in production")
    for origin in settings.cors_origins:
        if not _is_exact_https_origin(origin):
            raise ConfigError(
                "CORS_ORIGINS must list exact https:// origins in production "
                "(no '*', no patterns, no paths)"
            )
    if urlsplit(settings.effective_oidc_issuer).scheme != "https":
        raise ConfigError("OIDC_ISSUER must be an https:// URL in production")
    if settings.refresh_reuse_grace > MAX_PRODUCTION_REUSE_GRACE:
        # A stolen refresh token replayed inside the grace window is not detected as reuse.
        raise ConfigError(
            f"REFRESH_REUSE_GRACE must be at most {MAX_PRODUCTION_REUSE_GRACE} seconds "
            "in production"
        )
    if not settings.ratelimit_enabled and not settings.unsafe_production_without_ratelimit:
        raise ConfigError(
            "RATELIMIT_ENABLED must be true in production (capacity benchmarks may set "
            "UNSAFE_PRODUCTION_WITHOUT_RATELIMIT=true)"
        )
    if not settings.encryption_keys:
        raise ConfigError("ENCRYPTION_KEYS must be set in production (kid:base64key, 32-byte keys)")
    if settings.api_key_pepper is not None:
        if len(settings.api_key_pepper) < 32:
            raise ConfigError("API_KEY_PEPPER must be 32+ random characters in production")
        _refuse_weak_secret("API_KEY_PEPPER", settings.api_key_pepper)
    _refuse_weak_keys(settings.encryption_keys)
    if settings.webhook_allow_private:
        # It turns the SSRF guard off: an administrator's URL could reach the metadata service.
        raise ConfigError("WEBHOOK_ALLOW_PRIVATE must be false in production")
    if settings.pact_provider_states:
        # A test-only hook that creates accounts and hands out their tokens.
        raise ConfigError("PACT_PROVIDER_STATES must be false in production")


def _refuse_weak_secret(name: str, value: str) -> None:
    reason = secret_weakness(value.encode())
    if reason is not None:  # names the defect, never the value
        raise ConfigError(f"{name} {reason}: use a random value in production")


def _refuse_weak_keys(encryption_keys: str) -> None:
    for kid, key in EncryptionKeyRing.parse(encryption_keys).keys:
        reason = key_weakness(key)
        if reason is not None:
            raise ConfigError(
                f"ENCRYPTION_KEYS: key {kid!r} {reason}: use 32 random bytes in production"
            )


def _is_exact_https_origin(origin: str) -> bool:
    """Production wants exact `https://host[:port]` origins only: no `*`, no `null`, nothing
    that reads like a pattern (origins are compared as exact strings)."""
    return _ORIGIN.fullmatch(origin) is not None
