"""`Settings`: each setting of the API declared once, as a field (pydantic-settings): its variable
(the field's name in capitals unless an alias says otherwise), type, default, constraints and help
text, with what one value alone must satisfy. The README's configuration tables are generated from
these declarations (`python -m scripts.settings_table`)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, field_validator
from pydantic_settings import NoDecode

from webapp.config.base import DeclaredSettings, variable_of
from webapp.config.checks import (
    DEV_KEYS_FILE,
    DEV_SECRET,
    validate_production,
    validate_relations,
)
from webapp.config.database import sqlalchemy_url
from webapp.security.encryption import EncryptionKeyError, EncryptionKeyRing

Environment = Literal["development", "test", "production"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
# Flask-SQLAlchemy resolves a relative SQLite path against the app's instance folder
# (`instance/` beside the package): this is the file `make run` serves, so a `flask --app wsgi …`
# command run beside it without DATABASE_URL works on the same database.
DEV_DATABASE_URL = "sqlite:///gatehouse.db"


def _comma_list(value: Any) -> Any:
    """CORS_ORIGINS is a comma-separated list in the environment (not JSON)."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


CommaList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_list)]


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
        "psycopg 3 is used underneath); the default is `instance/gatehouse.db` (a relative SQLite "
        "path is read from the instance folder), the file `make run` serves",
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
    ratelimit_oauth_token: str = Field(
        "300 per minute",
        description="per-IP budget of the OAuth token endpoint (`POST /oauth/token`), instead "
        "of `RATELIMIT_DEFAULT`: a server-side client redeems its users' codes and refreshes "
        "their tokens from one address, so raise it for a busy one",
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
    webhook_secret_overlap: int = Field(
        24 * 3600,
        ge=0,
        le=30 * 24 * 3600,
        description="seconds a webhook endpoint's previous secret keeps signing, beside the new "
        "one, after `POST /webhooks/{id}/rotate-secret` (`0`: it stops at once; at most 30 days)",
    )
    webhook_retention: int = Field(
        30 * 24 * 3600,
        ge=24 * 3600,
        description="seconds domain events and the webhook delivery log are kept before "
        "`flask webhooks purge` deletes them (an event with a delivery still pending is kept); "
        "at least a day",
    )

    # -- Contract tests --------------------------------------------------------------------------
    pact_provider_states: bool = Field(
        False,
        description="mount `POST /_pact/provider-states`, the hook through which the Pact "
        "verification sets up its provider states (docs/contracts.md); only with "
        "`GATEHOUSE_ENV=test`, ignored in development, refused in production",
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

    # -- Rules between settings and for production (webapp.config.checks) ----------------------
    # Takes the name of pydantic's deprecated `BaseModel.validate` classmethod, unused here.
    def validate(self) -> None:  # type: ignore[override]
        """The rules that involve more than one setting, and production's refusals."""
        validate_relations(self)
        if self.is_production:
            validate_production(self)

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
    return variable_of(field, declared_in)
