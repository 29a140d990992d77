"""Configuration: the environment is read (12-factor) by settings classes declared like `Settings`.

Each setting of the API is declared once, below, as a field of `Settings` (pydantic-settings): its
variable (the field's name in capitals unless an alias says otherwise), type, default, constraints
and help text. The job workers' settings (SMTP, mail sender, retries, leases) are declared the same
way by `jobs.settings.JobsSettings`: both build on `DeclaredSettings`. The README's configuration
tables are generated from these declarations (`python -m scripts.settings_table`) and a test keeps
them equal.

`from_env()` parses and validates every variable at start-up; a bad value raises `ConfigError`
whose one-line message names the variable, never its value, so the process stops with one clear
line. Rules between settings and production's refusals of the development defaults are the
explicit checks of `validate()`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from flask import Flask, current_app
from pydantic import BeforeValidator, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from webapp.security.encryption import EncryptionKeyError, EncryptionKeyRing
from webapp.security.entropy import key_weakness, secret_weakness

Environment = Literal["development", "test", "production"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
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


def _comma_list(value: Any) -> Any:
    """CORS_ORIGINS is a comma-separated list in the environment (not JSON)."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


CommaList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_list)]


class DeclaredSettings(BaseSettings):
    """What every settings class of Gatehouse shares: `Settings` here, `jobs.settings.JobsSettings`
    for the job workers. Built from defaults plus what it is given, or from the environment by
    `from_env()`; a bad value raises `ConfigError` naming its variable. Immutable: tests derive
    variants with `with_overrides`."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        # The field name is accepted as well as an alias (`env=` for GATEHOUSE_ENV).
        validate_by_name=True,
        validate_by_alias=True,
        case_sensitive=False,
        # Checked by the validators of `validate()` and the field validators, not by
        # re-validating defaults on every construction.
        validate_default=False,
    )

    def __init__(self, **values: Any) -> None:
        """Defaults plus `values`, each checked on its own; a bad one raises `ConfigError`."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(_message(type(self), exc.errors()[0])) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # `Settings(...)` is the defaults plus what it is given; only `from_env()` reads the
        # environment, so a test's `Settings()` never depends on the shell it runs in.
        return (init_settings,)

    @classmethod
    def from_env(cls) -> Self:
        """Build settings from the process environment (defaults: development)."""
        try:
            found = EnvSettingsSource(cls)()
        except SettingsError as exc:
            raise ConfigError(str(exc).splitlines()[0]) from None
        # An optional setting given as an empty string is unset (compose's `${VAR:-}`).
        optional = {
            env_name(name, cls): name
            for name, info in cls.model_fields.items()
            if info.default is None
        }
        values = {
            key: value
            for key, value in found.items()
            if not (value == "" and (key.upper() in optional or key in optional.values()))
        }
        settings = cls(**values)
        settings.validate()
        return settings

    def with_overrides(self, **changes: Any) -> Self:
        """A copy with some values replaced (tests); validated like the original."""
        unknown = set(changes) - set(type(self).model_fields)
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
        updated = type(self)(**{**self.model_dump(), **changes})
        updated.validate()
        return updated

    # Takes the name of pydantic's deprecated `BaseModel.validate` classmethod, unused here.
    def validate(self) -> None:  # type: ignore[override]
        """The rules that involve more than one setting, and production's refusals (none
        unless a subclass has some)."""


class Settings(DeclaredSettings):
    """The application's settings, one declaration each: the API's, and those the job workers
    share with it (database, Redis, logging, `PUBLIC_BASE_URL`). What only the job workers read
    is declared by `jobs.settings.JobsSettings`."""

    # -- Deployment ----------------------------------------------------------------------------
    env: Environment = Field(
        "development",
        validation_alias="GATEHOUSE_ENV",
        description="which rules apply: `production` refuses development defaults and weak "
        "secrets; `test` is for the test suite",
    )
    secret_key: str = Field(
        DEV_SECRET,
        description="HMAC key for refresh tokens; 32+ random characters in production "
        "(evidently non-random values are refused)",
        json_schema_extra={"shown_default": "a development value"},
    )
    public_base_url: str = Field(
        "http://127.0.0.1:8000",
        description="where your web client lives: emails link to "
        "`<PUBLIC_BASE_URL>/verify-email?token=…` and `/reset-password?token=…`; the client posts "
        "the token to the API. `https://` required in production",
    )
    cors_origins: CommaList = Field(
        (),
        description="comma-separated allow-list of browser origins, compared as exact strings; "
        "`*` allows any origin outside production; in production exact `https://host[:port]` "
        "origins only",
        json_schema_extra={"shown_default": "empty (CORS off)"},
    )
    trusted_proxies: int = Field(
        0,
        ge=0,
        description="number of proxies in front whose `X-Forwarded-For`/`-Proto`/`-Host` are "
        "trusted (Werkzeug ProxyFix); per-IP limits and lockouts see the real client only when "
        "this is right",
    )
    web_concurrency: int = Field(2, gt=0, description="gunicorn worker processes")
    log_level: LogLevel = Field("INFO", description="least severe level logged (any case)")
    access_log_sample: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="share of successful (status < 400), fast requests that get an access "
        "log line; every 4xx, 5xx and slow request is logged whatever this says "
        "(docs/observability.md)",
    )
    access_log_slow_ms: float = Field(
        100.0,
        ge=0.0,
        description="a request taking at least this many milliseconds is always logged",
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        None,
        description="OpenTelemetry collector (tracing is off when unset); which traces are kept: "
        "`OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (below)",
    )
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="the port `/metrics` is served on: the job worker's own endpoint, and "
        "gunicorn's second listener for the API (`METRICS_ADDR` picks the interface). The API "
        "never answers `/metrics` on its own port in production; outside production it does "
        "while `METRICS_PORT` is unset (`make run`)",
        json_schema_extra={"shown_default": "unset (off)"},
    )

    # -- Database ------------------------------------------------------------------------------
    database_url: str = Field(
        DEV_DATABASE_URL,
        description="`postgresql://user:pass@host:port/db` (the plain form platforms hand out; "
        "psycopg 3 is used underneath)",
    )
    database_replica_url: str | None = Field(
        None, description="a read replica; list endpoints read from it"
    )
    db_pool_size: int = Field(10, gt=0, description="SQLAlchemy pool size per process")
    db_max_overflow: int = Field(
        5, ge=0, description="connections a process may open beyond `DB_POOL_SIZE`"
    )
    db_pool_timeout: float = Field(5.0, description="seconds to wait for a pooled connection")
    db_pool_recycle: int = Field(1800, description="seconds before a connection is replaced")
    db_pool_pre_ping: bool = Field(
        True, description="test connections before use (survives a database restart)"
    )
    db_statement_timeout_ms: int = Field(5000, description="PostgreSQL `statement_timeout`")

    # -- Redis and caches ----------------------------------------------------------------------
    redis_url: str | None = Field(
        None,
        description="`redis://host:port/db` or `unix:///path.sock`; without it, no cache and "
        "in-memory rate limits",
        json_schema_extra={"shown_default": "unset (`make run`: bundled server)"},
    )
    redis_timeout: float = Field(
        0.5,
        gt=0,
        description="seconds before a Redis call counts as failed (the API then uses the "
        "database for 2 s)",
    )
    cache_ttl: int = Field(
        300, gt=0, description="seconds a user or session state stays cached in Redis"
    )
    cache_local_ttl: float = Field(
        10.0,
        ge=0,
        description="seconds an API process keeps its own copy of a cached user, session or "
        "API-key state, while its invalidation subscription is live (`0`: off; see "
        "docs/architecture.md)",
    )
    idempotency_ttl: int = Field(
        24 * 3600, gt=0, description="seconds an `Idempotency-Key` is remembered"
    )

    # -- Tokens and sessions -------------------------------------------------------------------
    jwt_keys: str | None = Field(
        None, description="a JWK Set with private parts (JSON); the first key signs"
    )
    jwt_keys_file: str | None = Field(
        None,
        description="the same as a file path (Kubernetes Secret mount)",
        json_schema_extra={"shown_default": f"unset (`{DEV_KEYS_FILE}` outside production)"},
    )
    jwt_issuer: str = Field("gatehouse", description="`iss` claim")
    jwt_audience: str = Field("gatehouse", description="`aud` claim")
    jwks_max_age: int = Field(
        300, description="`Cache-Control: max-age` of `/.well-known/jwks.json`"
    )
    access_token_ttl: int = Field(900, gt=0, description="seconds an access token is valid")
    refresh_token_ttl: int = Field(
        12 * 3600,
        gt=0,
        description="seconds; a session's absolute lifetime (ASVS 3.3.2)",
        json_schema_extra={"shown_default": "`43200` (12 h)"},
    )
    session_idle_ttl: int = Field(
        30 * 60,
        gt=0,
        description="seconds without a refresh after which a session ends (a later refresh is "
        "401 `session-idle-timeout`); must exceed `ACCESS_TOKEN_TTL` and not exceed "
        "`REFRESH_TOKEN_TTL`",
        json_schema_extra={"shown_default": "`1800` (30 min)"},
    )
    remember_me_ttl: int = Field(
        30 * 24 * 3600,
        gt=0,
        description='absolute lifetime of a session signed in with `"remember_me": true`',
        json_schema_extra={"shown_default": "`2592000` (30 days)"},
    )
    remember_me_idle_ttl: int = Field(
        7 * 24 * 3600,
        gt=0,
        description="idle timeout of such a session; must exceed `ACCESS_TOKEN_TTL` and not "
        "exceed `REMEMBER_ME_TTL`",
        json_schema_extra={"shown_default": "`604800` (7 days)"},
    )
    refresh_reuse_grace: int = Field(
        0,
        ge=0,
        description="seconds during which a reused refresh token gets the same successor "
        "instead of revoking the session; at most `60` in production",
        json_schema_extra={"shown_default": "`0` (off)"},
    )
    reauth_max_age: int = Field(
        300,
        gt=0,
        description="seconds after a session's last password or second-factor check during "
        "which sensitive changes (API keys, TOTP, recovery codes, email) are allowed; later they "
        "answer 403 `reauthentication-required` until `POST /auth/reauthenticate`",
    )
    mfa_token_ttl: int = Field(
        300,
        gt=0,
        le=3600,
        description="seconds (at most 3600) to complete `POST /auth/login/mfa` after the "
        "password step",
    )
    mfa_issuer: str = Field(
        "Gatehouse",
        description="issuer shown by authenticator apps (in the `otpauth://` URI); no `:`",
    )

    # -- Accounts and email links --------------------------------------------------------------
    require_email_verification: bool = Field(
        True, description="refuse login (403 `email-unverified`) until the email is verified"
    )
    email_token_ttl: int = Field(24 * 3600, gt=0, description="verification link lifetime, seconds")
    password_reset_ttl: int = Field(3600, gt=0, description="reset link lifetime, seconds")
    unverified_account_ttl: int = Field(
        7 * 24 * 3600,
        gt=0,
        description="seconds after which a sign-up whose address was never verified (and that "
        "never signed in) expires: its address can be registered again at once, and it signs in "
        "and resends like an unknown account; at least `EMAIL_TOKEN_TTL`",
    )

    # -- Sign-in throttling and rate limits ----------------------------------------------------
    lockout_threshold: int = Field(
        5,
        gt=0,
        description="failed logins for one email from one client IP within `LOCKOUT_WINDOW` "
        "that lock that email for that IP (known and unknown emails alike; other IPs are not "
        "affected)",
    )
    lockout_ip_threshold: int = Field(
        20,
        gt=0,
        description="failed logins from one IP within `LOCKOUT_WINDOW` that lock the IP",
    )
    lockout_account_threshold: int = Field(
        50,
        gt=0,
        description="failed logins for one email from all IPs within `LOCKOUT_WINDOW` after "
        "which its sign-ins wait until the window ends (429 `login-throttled` with the true "
        "`Retry-After`; a delay, not a lock; a device that signed in to the account before is "
        "exempt)",
    )
    lockout_window: int = Field(900, gt=0, description="seconds over which failures are counted")
    lockout_duration: int = Field(900, gt=0, description="seconds a lockout lasts")
    ratelimit_enabled: bool = Field(
        True,
        description="rate limiting on/off; production refuses `false` unless "
        "`UNSAFE_PRODUCTION_WITHOUT_RATELIMIT=true`",
    )
    unsafe_production_without_ratelimit: bool = Field(
        False,
        description="capacity benchmarks and load tests only: lets production run with "
        "`RATELIMIT_ENABLED=false` (every start logs a warning). Never in a real deployment",
    )
    ratelimit_default: str = Field(
        "300 per minute", description="per endpoint, per user (signed in) or per IP"
    )
    ratelimit_auth: str = Field(
        "20 per minute", description="extra per-IP budget shared by the password endpoints"
    )

    # -- Secrets at rest and API keys ----------------------------------------------------------
    encryption_keys: str | None = Field(
        None,
        description="`kid:base64key,kid:base64key` — AES-256 keys (32 bytes each) for secrets "
        "at rest; the first encrypts, all decrypt. Required in production. New entry: "
        "`flask --app wsgi keys new-encryption-key --kid K`",
        json_schema_extra={
            "shown_default": "unset (outside production: one key derived from `SECRET_KEY`)"
        },
    )
    api_key_pepper: str | None = Field(
        None,
        description="HMAC key for stored API key and OAuth client secret hashes; 32+ random "
        "characters in production when set. Set it to rotate `SECRET_KEY` without invalidating "
        "them; changing it invalidates every API key and OAuth client secret",
        json_schema_extra={"shown_default": "unset (derived from `SECRET_KEY`)"},
    )
    api_key_rotation_grace: int = Field(
        24 * 3600,
        ge=0,
        description="seconds an API key's old secret keeps working after "
        "`POST /api-keys/{id}/rotate` (`0`: stops at once)",
    )
    api_key_usage_flush_interval: int = Field(
        60,
        gt=0,
        description="seconds between batched writes of API keys' last-use time and IP",
    )
    api_key_max_per_user: int = Field(50, gt=0, description="active API keys one user may hold")

    # -- OAuth 2.1 / OpenID Connect provider ---------------------------------------------------
    oidc_issuer: str | None = Field(
        None,
        description="the provider's issuer URL (`iss`; discovery at "
        "`<OIDC_ISSUER>/.well-known/openid-configuration`): where Gatehouse itself is reached, "
        "no query or fragment. `https://` required in production",
        json_schema_extra={"shown_default": "unset (`PUBLIC_BASE_URL`)"},
    )
    oauth_client_secret_rotation_grace: int = Field(
        24 * 3600,
        ge=0,
        description="seconds an OAuth client's old secret keeps working after "
        "`POST /oauth/clients/{id}/rotate-secret` (`0`: stops at once)",
    )

    # -- Webhooks --------------------------------------------------------------------------------
    webhook_allow_private: bool = Field(
        False,
        description="let webhooks use `http://` URLs and reach private, loopback and link-local "
        "addresses (development and tests only: it turns the SSRF guard off; refused in "
        "production)",
    )

    # -- Field validators: what one value alone must satisfy -----------------------------------
    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level_any_case(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("public_base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("oidc_issuer")
    @classmethod
    def _oidc_issuer_shape(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http(s) URL")
        if parts.query or parts.fragment or "#" in value:
            raise ValueError("must have no query and no fragment")
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _database_url_shape(cls, value: str) -> str:
        if not value.startswith(("postgresql", "postgres://", "sqlite")):
            raise ValueError("must be a postgresql:// (or sqlite:// in development) URL")
        return value

    @field_validator("mfa_issuer")
    @classmethod
    def _mfa_issuer_shape(cls, value: str) -> str:
        if not value.strip() or ":" in value:
            raise ValueError("must be a non-empty name without ':'")
        return value

    @field_validator("encryption_keys")
    @classmethod
    def _encryption_keys_shape(cls, value: str | None) -> str | None:
        if value:
            try:
                EncryptionKeyRing.parse(value)
            except EncryptionKeyError as exc:  # the message never holds key material
                # A leading ':' makes the message "ENCRYPTION_KEYS: <what is wrong>".
                raise ValueError(f": {exc}") from None
        return value

    # -- Rules between settings and for production ---------------------------------------------
    # Takes the name of pydantic's deprecated `BaseModel.validate` classmethod, unused here.
    def validate(self) -> None:  # type: ignore[override]
        """The rules that involve more than one setting, and production's refusals."""
        if self.unverified_account_ttl < self.email_token_ttl:
            # Otherwise a sign-up could expire while its verification link still works.
            raise ConfigError("UNVERIFIED_ACCOUNT_TTL must not be shorter than EMAIL_TOKEN_TTL")
        self._validate_session_lifetimes()
        if self.jwt_keys and self.jwt_keys_file:
            raise ConfigError("set JWT_KEYS or JWT_KEYS_FILE, not both")
        if self.is_production:
            self._validate_production()

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
        if urlsplit(self.effective_oidc_issuer).scheme != "https":
            raise ConfigError("OIDC_ISSUER must be an https:// URL in production")
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
        if not self.encryption_keys:
            raise ConfigError(
                "ENCRYPTION_KEYS must be set in production (kid:base64key, 32-byte keys)"
            )
        if self.api_key_pepper is not None:
            if len(self.api_key_pepper) < 32:
                raise ConfigError("API_KEY_PEPPER must be 32+ random characters in production")
            _refuse_weak_secret("API_KEY_PEPPER", self.api_key_pepper)
        _refuse_weak_keys(self.encryption_keys)
        if self.webhook_allow_private:
            # It turns the SSRF guard off: an administrator's URL could reach the metadata service.
            raise ConfigError("WEBHOOK_ALLOW_PRIVATE must be false in production")

    # -- Derived values ------------------------------------------------------------------------
    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def effective_api_key_pepper(self) -> bytes:
        """API_KEY_PEPPER, or (when unset) a key derived from SECRET_KEY — which production
        already requires to be strong, so no default secret is ever used."""
        if self.api_key_pepper:
            return self.api_key_pepper.encode()
        return hmac.new(
            self.secret_key.encode(), b"gatehouse api key pepper", hashlib.sha256
        ).digest()

    @property
    def effective_oidc_issuer(self) -> str:
        """OIDC_ISSUER, or PUBLIC_BASE_URL when unset."""
        return self.oidc_issuer or self.public_base_url

    @property
    def sqlalchemy_url(self) -> str:
        return sqlalchemy_url(self.database_url)


def env_name(field: str, declared_in: type[DeclaredSettings] = Settings) -> str:
    """The environment variable of a field of `Settings` (or of another settings class)."""
    alias = declared_in.model_fields[field].validation_alias
    return alias if isinstance(alias, str) else field.upper()


def _message(declared_in: type[DeclaredSettings], error: ErrorDetails) -> str:
    """One line naming the variable, never its value (it may be a secret)."""
    fields = declared_in.model_fields
    loc = str(error["loc"][0]) if error["loc"] else ""
    # Errors are located by field name or by alias; both lead to the field.
    by_key = {
        **{name: name for name in fields},
        **{env_name(name, declared_in).lower(): name for name in fields},
    }
    field = by_key.get(loc.lower(), loc)
    name = env_name(field, declared_in) if field in fields else loc.upper()
    kind, ctx = error["type"], error.get("ctx", {})
    metadata = fields[field].metadata if field in fields else []
    bounds = {type(m).__name__: m for m in metadata}
    if kind in ("greater_than_equal", "less_than_equal") and {"Ge", "Le"} <= set(bounds):
        return f"{name} must be between {ctx.get('ge', bounds['Ge'].ge)} and {bounds['Le'].le}"
    if kind == "greater_than" and ctx.get("gt") == 0:
        return f"{name} must be a positive number"
    if kind == "greater_than_equal" and ctx.get("ge") == 0:
        return f"{name} must not be negative"
    if kind == "less_than_equal":
        return f"{name} must be at most {ctx['le']}"
    if kind == "literal_error":
        # Choices are never secret: saying what was given helps more than it leaks.
        return f"{name} must be one of {ctx['expected']}, got {error['input']!r}"
    if kind == "value_error":
        reason = str(ctx["error"])
        return f"{name}{reason}" if reason.startswith(":") else f"{name} {reason}"
    if kind in _TYPE_MESSAGES:
        return f"{name} {_TYPE_MESSAGES[kind]}"
    return f"{name}: {error['msg']}"


_TYPE_MESSAGES = {
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "bool_parsing": "must be true or false",
    "string_type": "must be text",
}


@dataclass(frozen=True)
class ProcessVariable:
    """A variable read around the application rather than by a settings class: by gunicorn.conf.py
    before any application exists, by the job worker's metrics endpoint, by a CLI command, or by a
    library itself (`reader`: which one; the code never reads it)."""

    name: str
    default: str
    meaning: str
    reader: str | None = None


PROCESS_VARIABLES: tuple[ProcessVariable, ...] = (
    ProcessVariable("PORT", "`8000`", "gunicorn listens on `0.0.0.0:$PORT` unless `BIND` is set"),
    ProcessVariable("BIND", "`0.0.0.0:$PORT`", "gunicorn listen address"),
    ProcessVariable("GUNICORN_THREADS", "`4`", "threads per gunicorn worker"),
    ProcessVariable("GUNICORN_TIMEOUT", "`30`", "seconds before gunicorn restarts a silent worker"),
    ProcessVariable(
        "GUNICORN_GRACEFUL_TIMEOUT", "`25`", "seconds a stopping worker may finish its requests"
    ),
    ProcessVariable("GUNICORN_KEEPALIVE", "`5`", "seconds an idle keep-alive connection is kept"),
    ProcessVariable(
        "GUNICORN_MAX_REQUESTS", "`0` (never)", "requests after which a worker is replaced"
    ),
    ProcessVariable(
        "METRICS_ADDR",
        "`0.0.0.0`",
        "the interface `/metrics` listens on when `METRICS_PORT` is set",
    ),
    ProcessVariable(
        "PROMETHEUS_MULTIPROC_DIR",
        "a fresh temporary directory per gunicorn master",
        "where processes write metric samples; set it (per process group) for the worker too",
    ),
    ProcessVariable(
        "GATEHOUSE_ADMIN_PASSWORD",
        "unset",
        "password for `users create-admin` (otherwise prompted)",
    ),
    ProcessVariable(
        "OTEL_TRACES_SAMPLER",
        "`parentbased_always_on` (every trace)",
        "which traces are recorded while tracing is on (`OTEL_EXPORTER_OTLP_ENDPOINT`); "
        "`parentbased_traceidratio` keeps the share `OTEL_TRACES_SAMPLER_ARG` of new traces and "
        "follows the caller's decision for a request that carries a `traceparent` (the "
        "OpenTelemetry SDK's variable and values, read once per process to decide each "
        "request's sampling at the WSGI edge)",
    ),
    ProcessVariable(
        "OTEL_TRACES_SAMPLER_ARG",
        "`1.0` for the ratio samplers",
        "the sampler's argument; for `parentbased_traceidratio`, the share of new traces kept "
        "(the shipped ConfigMap: `0.1`)",
    ),
)


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


def sqlalchemy_url(url: str) -> str:
    """Accept the plain `postgresql://` form platforms hand out and use psycopg 3 underneath."""
    for prefix in ("postgresql+psycopg2://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


# Where `create_app` keeps an application's settings; read only through the two functions below.
APP_CONFIG_KEY = "GATEHOUSE"


def settings_of(app: Flask) -> Settings:
    """The settings an application was built with (set-up code handed the app itself)."""
    settings: Settings = app.config[APP_CONFIG_KEY]
    return settings


def current_settings() -> Settings:
    """The settings of the application in context: the one way code running inside an
    application (views, services, CLI commands, jobs) reaches them. Code that is handed its
    settings (the dispatcher, the mailer, the delivery of a job) takes them as an argument."""
    return settings_of(current_app)
