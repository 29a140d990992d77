"""Configuration: the one place that reads the environment (12-factor).

`Settings.from_env()` parses and validates every variable at start-up; a bad value raises
`ConfigError` whose message names the variable, so the process stops with one clear line.
Production refuses the development defaults of every secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, fields, replace
from typing import Any
from urllib.parse import urlsplit

from environs import Env, EnvError
from flask import current_app

from webapp.security.encryption import EncryptionKeyError, EncryptionKeyRing
from webapp.security.entropy import key_weakness, secret_weakness

ENVIRONMENTS = ("development", "test", "production")
DEV_SECRET = "dev-insecure-secret-change-me"  # noqa: S105 - the default production refuses
DEV_DATABASE_URL = "sqlite:///instance/gatehouse.db"
DEV_KEYS_FILE = "instance/jwt-keys.json"


# Values that were published (defaults in this repository, now or in the past): production refuses
# them even where they would pass the randomness checks.
PUBLISHED_SECRETS = frozenset({DEV_SECRET, "compose-local-only-not-a-real-secret-0123456789"})
# Refresh-token reuse inside the grace window is not detected; keep that window to a client's
# concurrent-refresh race, not hours of replay.
MAX_PRODUCTION_REUSE_GRACE = 60
_ORIGIN = re.compile(r"https://[A-Za-z0-9.-]+(:[0-9]{1,5})?")


class ConfigError(Exception):
    """A configuration variable is missing or invalid; the message names it."""


@dataclass(frozen=True)
class Settings:
    env: str = "development"
    secret_key: str = DEV_SECRET
    database_url: str = DEV_DATABASE_URL
    database_replica_url: str | None = None
    db_pool_size: int = 10
    db_max_overflow: int = 5
    db_pool_timeout: float = 5.0
    db_pool_recycle: int = 1800
    db_pool_pre_ping: bool = True
    db_statement_timeout_ms: int = 5000
    redis_url: str | None = None
    redis_timeout: float = 0.5
    smtp_url: str = "smtp://localhost:1025"
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_timeout: float = 10.0
    smtp_breaker_fail_max: int = 5
    smtp_breaker_reset_timeout: float = 30.0
    jobs_max_retries: int = 5
    jobs_retry_backoff: float = 10.0
    jobs_lease: float = 300.0
    jobs_dispatch_interval: float = 1.0
    jobs_batch_size: int = 50
    jobs_worker_max_jobs: int = 1000
    jobs_worker_max_memory_mb: int = 512
    mail_from: str = "Gatehouse <no-reply@gatehouse.local>"
    public_base_url: str = "http://127.0.0.1:8000"
    cors_origins: tuple[str, ...] = ()
    trusted_proxies: int = 0
    jwt_keys: str | None = None
    jwt_keys_file: str | None = None
    jwt_issuer: str = "gatehouse"
    jwt_audience: str = "gatehouse"
    jwks_max_age: int = 300
    access_token_ttl: int = 900
    refresh_token_ttl: int = 12 * 3600
    session_idle_ttl: int = 30 * 60
    remember_me_ttl: int = 30 * 24 * 3600
    remember_me_idle_ttl: int = 7 * 24 * 3600
    refresh_reuse_grace: int = 0
    require_email_verification: bool = True
    email_token_ttl: int = 24 * 3600
    password_reset_ttl: int = 3600
    unverified_account_ttl: int = 7 * 24 * 3600
    lockout_threshold: int = 5
    lockout_ip_threshold: int = 20
    lockout_account_threshold: int = 50
    lockout_window: int = 900
    lockout_duration: int = 900
    ratelimit_enabled: bool = True
    unsafe_production_without_ratelimit: bool = False
    ratelimit_default: str = "300 per minute"
    ratelimit_auth: str = "20 per minute"
    cache_ttl: int = 300
    cache_local_ttl: float = 10.0
    idempotency_ttl: int = 24 * 3600
    encryption_keys: str | None = None
    api_key_pepper: str | None = None
    api_key_rotation_grace: int = 24 * 3600
    api_key_usage_flush_interval: int = 60
    api_key_max_per_user: int = 50
    mfa_token_ttl: int = 300
    mfa_issuer: str = "Gatehouse"
    reauth_max_age: int = 300
    log_level: str = "INFO"
    otel_exporter_otlp_endpoint: str | None = None
    web_concurrency: int = 2
    metrics_port: int | None = None

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @classmethod
    def from_env(cls) -> Settings:
        """Build settings from the process environment (defaults: development)."""
        try:
            settings = cls._parse(Env(eager=True))
        except EnvError as exc:
            raise ConfigError(str(exc)) from None
        settings.validate()
        return settings

    @classmethod
    def _parse(cls, env: Env) -> Settings:
        d = cls()
        name = env.str("GATEHOUSE_ENV", d.env)
        if name not in ENVIRONMENTS:
            raise ConfigError(
                f"GATEHOUSE_ENV must be one of {', '.join(ENVIRONMENTS)}, got {name!r}"
            )
        return cls(
            env=name,
            secret_key=env.str("SECRET_KEY", d.secret_key),
            database_url=env.str("DATABASE_URL", d.database_url),
            database_replica_url=env.str("DATABASE_REPLICA_URL", None) or None,
            db_pool_size=env.int("DB_POOL_SIZE", d.db_pool_size),
            db_max_overflow=env.int("DB_MAX_OVERFLOW", d.db_max_overflow),
            db_pool_timeout=env.float("DB_POOL_TIMEOUT", d.db_pool_timeout),
            db_pool_recycle=env.int("DB_POOL_RECYCLE", d.db_pool_recycle),
            db_pool_pre_ping=env.bool("DB_POOL_PRE_PING", d.db_pool_pre_ping),
            db_statement_timeout_ms=env.int("DB_STATEMENT_TIMEOUT_MS", d.db_statement_timeout_ms),
            redis_url=env.str("REDIS_URL", None) or None,
            redis_timeout=env.float("REDIS_TIMEOUT", d.redis_timeout),
            smtp_url=env.str("SMTP_URL", d.smtp_url),
            smtp_starttls=env.bool("SMTP_STARTTLS", d.smtp_starttls),
            smtp_username=env.str("SMTP_USERNAME", None) or None,
            smtp_password=env.str("SMTP_PASSWORD", None) or None,
            smtp_timeout=env.float("SMTP_TIMEOUT", d.smtp_timeout),
            smtp_breaker_fail_max=env.int("SMTP_BREAKER_FAIL_MAX", d.smtp_breaker_fail_max),
            smtp_breaker_reset_timeout=env.float(
                "SMTP_BREAKER_RESET_TIMEOUT", d.smtp_breaker_reset_timeout
            ),
            jobs_max_retries=env.int("JOBS_MAX_RETRIES", d.jobs_max_retries),
            jobs_retry_backoff=env.float("JOBS_RETRY_BACKOFF", d.jobs_retry_backoff),
            jobs_lease=env.float("JOBS_LEASE", d.jobs_lease),
            jobs_dispatch_interval=env.float("JOBS_DISPATCH_INTERVAL", d.jobs_dispatch_interval),
            jobs_batch_size=env.int("JOBS_BATCH_SIZE", d.jobs_batch_size),
            jobs_worker_max_jobs=env.int("JOBS_WORKER_MAX_JOBS", d.jobs_worker_max_jobs),
            jobs_worker_max_memory_mb=env.int(
                "JOBS_WORKER_MAX_MEMORY_MB", d.jobs_worker_max_memory_mb
            ),
            mail_from=env.str("MAIL_FROM", d.mail_from),
            public_base_url=env.str("PUBLIC_BASE_URL", d.public_base_url).rstrip("/"),
            cors_origins=tuple(env.list("CORS_ORIGINS", [])),
            trusted_proxies=env.int("TRUSTED_PROXIES", d.trusted_proxies),
            jwt_keys=env.str("JWT_KEYS", None) or None,
            jwt_keys_file=env.str("JWT_KEYS_FILE", None) or None,
            jwt_issuer=env.str("JWT_ISSUER", d.jwt_issuer),
            jwt_audience=env.str("JWT_AUDIENCE", d.jwt_audience),
            jwks_max_age=env.int("JWKS_MAX_AGE", d.jwks_max_age),
            access_token_ttl=env.int("ACCESS_TOKEN_TTL", d.access_token_ttl),
            refresh_token_ttl=env.int("REFRESH_TOKEN_TTL", d.refresh_token_ttl),
            session_idle_ttl=env.int("SESSION_IDLE_TTL", d.session_idle_ttl),
            remember_me_ttl=env.int("REMEMBER_ME_TTL", d.remember_me_ttl),
            remember_me_idle_ttl=env.int("REMEMBER_ME_IDLE_TTL", d.remember_me_idle_ttl),
            refresh_reuse_grace=env.int("REFRESH_REUSE_GRACE", d.refresh_reuse_grace),
            require_email_verification=env.bool(
                "REQUIRE_EMAIL_VERIFICATION", d.require_email_verification
            ),
            email_token_ttl=env.int("EMAIL_TOKEN_TTL", d.email_token_ttl),
            password_reset_ttl=env.int("PASSWORD_RESET_TTL", d.password_reset_ttl),
            unverified_account_ttl=env.int("UNVERIFIED_ACCOUNT_TTL", d.unverified_account_ttl),
            lockout_threshold=env.int("LOCKOUT_THRESHOLD", d.lockout_threshold),
            lockout_ip_threshold=env.int("LOCKOUT_IP_THRESHOLD", d.lockout_ip_threshold),
            lockout_account_threshold=env.int(
                "LOCKOUT_ACCOUNT_THRESHOLD", d.lockout_account_threshold
            ),
            lockout_window=env.int("LOCKOUT_WINDOW", d.lockout_window),
            lockout_duration=env.int("LOCKOUT_DURATION", d.lockout_duration),
            ratelimit_enabled=env.bool("RATELIMIT_ENABLED", d.ratelimit_enabled),
            unsafe_production_without_ratelimit=env.bool(
                "UNSAFE_PRODUCTION_WITHOUT_RATELIMIT", d.unsafe_production_without_ratelimit
            ),
            ratelimit_default=env.str("RATELIMIT_DEFAULT", d.ratelimit_default),
            ratelimit_auth=env.str("RATELIMIT_AUTH", d.ratelimit_auth),
            cache_ttl=env.int("CACHE_TTL", d.cache_ttl),
            cache_local_ttl=env.float("CACHE_LOCAL_TTL", d.cache_local_ttl),
            idempotency_ttl=env.int("IDEMPOTENCY_TTL", d.idempotency_ttl),
            encryption_keys=env.str("ENCRYPTION_KEYS", None) or None,
            api_key_pepper=env.str("API_KEY_PEPPER", None) or None,
            api_key_rotation_grace=env.int("API_KEY_ROTATION_GRACE", d.api_key_rotation_grace),
            api_key_usage_flush_interval=env.int(
                "API_KEY_USAGE_FLUSH_INTERVAL", d.api_key_usage_flush_interval
            ),
            api_key_max_per_user=env.int("API_KEY_MAX_PER_USER", d.api_key_max_per_user),
            mfa_token_ttl=env.int("MFA_TOKEN_TTL", d.mfa_token_ttl),
            mfa_issuer=env.str("MFA_ISSUER", d.mfa_issuer),
            reauth_max_age=env.int("REAUTH_MAX_AGE", d.reauth_max_age),
            log_level=env.str("LOG_LEVEL", d.log_level).upper(),
            otel_exporter_otlp_endpoint=env.str("OTEL_EXPORTER_OTLP_ENDPOINT", None) or None,
            web_concurrency=env.int("WEB_CONCURRENCY", d.web_concurrency),
            # Empty counts as unset, as for the job worker's --metrics-port.
            metrics_port=env.int("METRICS_PORT", None) if env.str("METRICS_PORT", "") else None,
        )

    def validate(self) -> None:
        positive = [
            "access_token_ttl",
            "refresh_token_ttl",
            "session_idle_ttl",
            "remember_me_ttl",
            "remember_me_idle_ttl",
            "email_token_ttl",
            "password_reset_ttl",
            "unverified_account_ttl",
            "lockout_threshold",
            "lockout_ip_threshold",
            "lockout_account_threshold",
            "lockout_window",
            "lockout_duration",
            "cache_ttl",
            "db_pool_size",
            "web_concurrency",
            "idempotency_ttl",
            "redis_timeout",
            "smtp_timeout",
            "smtp_breaker_fail_max",
            "smtp_breaker_reset_timeout",
            "jobs_retry_backoff",
            "jobs_lease",
            "jobs_dispatch_interval",
            "jobs_batch_size",
            "jobs_worker_max_jobs",
            "jobs_worker_max_memory_mb",
            "api_key_usage_flush_interval",
            "api_key_max_per_user",
            "mfa_token_ttl",
            "reauth_max_age",
        ]
        for attr in positive:
            if getattr(self, attr) <= 0:
                raise ConfigError(f"{attr.upper()} must be a positive number")
        for attr in (
            "refresh_reuse_grace",
            "trusted_proxies",
            "db_max_overflow",
            "jobs_max_retries",
            "api_key_rotation_grace",
            "cache_local_ttl",
        ):
            if getattr(self, attr) < 0:
                raise ConfigError(f"{attr.upper()} must not be negative")
        if self.unverified_account_ttl < self.email_token_ttl:
            # Otherwise a sign-up could expire while its verification link still works.
            raise ConfigError("UNVERIFIED_ACCOUNT_TTL must not be shorter than EMAIL_TOKEN_TTL")
        self._validate_session_lifetimes()
        if self.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(f"LOG_LEVEL must be a logging level name, got {self.log_level!r}")
        if not self.database_url.startswith(("postgresql", "postgres://", "sqlite")):
            raise ConfigError(
                "DATABASE_URL must be a postgresql:// (or sqlite:// in development) URL"
            )
        smtp = urlsplit(self.smtp_url)
        if smtp.scheme not in ("smtp", "smtps") or not smtp.hostname:
            # The URL may hold credentials: name the variable, never echo its value.
            raise ConfigError("SMTP_URL must look like smtp://host:port or smtps://host:port")
        if self.metrics_port is not None and not 0 < self.metrics_port < 65536:
            raise ConfigError("METRICS_PORT must be between 1 and 65535")
        if self.jwt_keys and self.jwt_keys_file:
            raise ConfigError("set JWT_KEYS or JWT_KEYS_FILE, not both")
        if self.is_production:
            self._validate_production()
        self._validate_credentials()

    def _validate_session_lifetimes(self) -> None:
        """Idleness is enforced when a refresh token is exchanged, so an access token must
        expire before the shortest idle deadline, and no idle deadline outlives its session."""
        if self.access_token_ttl >= self.refresh_token_ttl:
            raise ConfigError("ACCESS_TOKEN_TTL must be shorter than REFRESH_TOKEN_TTL")
        if self.access_token_ttl >= min(self.session_idle_ttl, self.remember_me_idle_ttl):
            raise ConfigError(
                "ACCESS_TOKEN_TTL must be shorter than SESSION_IDLE_TTL and REMEMBER_ME_IDLE_TTL"
            )
        if self.session_idle_ttl > self.refresh_token_ttl:
            raise ConfigError("SESSION_IDLE_TTL must not exceed REFRESH_TOKEN_TTL")
        if self.remember_me_idle_ttl > self.remember_me_ttl:
            raise ConfigError("REMEMBER_ME_IDLE_TTL must not exceed REMEMBER_ME_TTL")

    def _validate_credentials(self) -> None:
        """API keys and encryption at rest (webapp.security.encryption, webapp.apikeys)."""
        if self.encryption_keys:
            try:
                EncryptionKeyRing.parse(self.encryption_keys)
            except EncryptionKeyError as exc:  # the message never holds key material
                raise ConfigError(f"ENCRYPTION_KEYS: {exc}") from None
        if self.mfa_token_ttl > 3600:
            raise ConfigError("MFA_TOKEN_TTL must be at most 3600 seconds")
        if not self.mfa_issuer.strip() or ":" in self.mfa_issuer:
            raise ConfigError("MFA_ISSUER must be a non-empty name without ':'")
        if self.is_production:
            if not self.encryption_keys:
                raise ConfigError(
                    "ENCRYPTION_KEYS must be set in production (kid:base64key, 32-byte keys)"
                )
            if self.api_key_pepper is not None:
                if len(self.api_key_pepper) < 32:
                    raise ConfigError("API_KEY_PEPPER must be 32+ random characters in production")
                _refuse_weak_secret("API_KEY_PEPPER", self.api_key_pepper)
            _refuse_weak_keys(self.encryption_keys)

    @property
    def effective_api_key_pepper(self) -> bytes:
        """API_KEY_PEPPER, or (when unset) a key derived from SECRET_KEY — which production
        already requires to be strong, so no default secret is ever used."""
        if self.api_key_pepper:
            return self.api_key_pepper.encode()
        return hmac.new(
            self.secret_key.encode(), b"gatehouse api key pepper", hashlib.sha256
        ).digest()

    def _validate_production(self) -> None:
        if self.secret_key in PUBLISHED_SECRETS or len(self.secret_key) < 32:
            raise ConfigError(
                "SECRET_KEY must be set to a random value of 32+ characters in production"
            )
        _refuse_weak_secret("SECRET_KEY", self.secret_key)
        if not (self.jwt_keys or self.jwt_keys_file):
            raise ConfigError("JWT_KEYS or JWT_KEYS_FILE must be set in production")
        if self.jwt_keys_file == DEV_KEYS_FILE:
            raise ConfigError("JWT_KEYS_FILE must not be the development key file in production")
        if self.database_url.startswith("sqlite"):
            raise ConfigError("DATABASE_URL must point to PostgreSQL in production")
        if not self.redis_url:
            raise ConfigError("REDIS_URL must be set in production")
        public = urlsplit(self.public_base_url)
        if public.scheme != "https" or not public.hostname:
            # Emailed reset and verification links carry single-use tokens: never in clear text.
            raise ConfigError("PUBLIC_BASE_URL must be an https:// URL in production")
        for origin in self.cors_origins:
            if not _is_exact_https_origin(origin):
                raise ConfigError(
                    "CORS_ORIGINS must list exact https:// origins in production "
                    "(no '*', no patterns, no paths)"
                )
        if self.refresh_reuse_grace > MAX_PRODUCTION_REUSE_GRACE:
            # A stolen refresh token replayed inside the grace window is not detected as reuse.
            raise ConfigError(
                f"REFRESH_REUSE_GRACE must be at most {MAX_PRODUCTION_REUSE_GRACE} seconds "
                "in production"
            )
        if not self.ratelimit_enabled and not self.unsafe_production_without_ratelimit:
            raise ConfigError(
                "RATELIMIT_ENABLED must be true in production (capacity benchmarks may set "
                "UNSAFE_PRODUCTION_WITHOUT_RATELIMIT=true)"
            )

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some values replaced (tests); validated like the original."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
        updated = replace(self, **changes)
        updated.validate()
        return updated

    @property
    def sqlalchemy_url(self) -> str:
        return sqlalchemy_url(self.database_url)


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
    """flask-cors reads '*' and other regex characters as patterns; production wants exact
    `https://host[:port]` origins only."""
    return _ORIGIN.fullmatch(origin) is not None


def sqlalchemy_url(url: str) -> str:
    """Accept the plain `postgresql://` form platforms hand out and use psycopg 3 underneath."""
    for prefix in ("postgresql+psycopg2://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def current_settings() -> Settings:
    """The settings of the application in context (services, jobs and CLI commands)."""
    settings: Settings = current_app.config["GATEHOUSE"]
    return settings
