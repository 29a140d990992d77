"""The composition root: `create_app` builds the application (`webapp.create_app` hands over to
it). It is the one module that imports both `webapp` and `jobs`: it binds the extensions, adds
webapp's CLI groups and blueprints, and wires in what the jobs package offers — its settings
(`jobs.settings`, validated at start-up beside webapp's), the `flask jobs` commands (`jobs.cli`)
and the /api/v1/admin/jobs blueprint (`jobs.admin`). Nothing else in `webapp` imports `jobs`,
and `jobs` never imports this module (docs/architecture.md, "Import rules")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask, Request
from flask.sessions import SecureCookieSession, SessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix

import observability
from jobs import settings as jobs_config
from jobs.admin.routes import blp as admin_jobs_blp
from jobs.cli import jobs_cli
from jobs.settings import JobsSettings
from webapp import cli, models, sqlite
from webapp.auth import tokens
from webapp.cache import RedisStore
from webapp.config import APP_CONFIG_KEY, DEV_KEYS_FILE, ConfigError, Settings, sqlalchemy_url
from webapp.extensions import api, db, migrate
from webapp.http import headers, hostile, problems, ratelimit, request_id
from webapp.ops import metrics as ops_metrics
from webapp.provider_states import routes as provider_states
from webapp.routes import register_blueprints
from webapp.security import encryption
from webapp.security.keys import KeyRing, KeyRingError, write_new_keyfile
from webapp.webhooks import metrics as webhook_metrics
from webapp.webhooks import service as webhooks

API_TITLE = "Gatehouse"
API_VERSION = "v1"


class NoSessions(SessionInterface):
    """The API is stateless (bearer tokens, API keys): no cookie is read or written, and any
    attempt to store something in `flask.session` fails loudly (a NullSession)."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        return self.make_null_session(app)

    def save_session(self, app: Flask, session: Any, response: Any) -> None:
        return None


def _engine_options(settings: Settings, url: str) -> dict[str, Any]:
    # SQL parameters never appear in an exception's text, so never in a traceback that is logged:
    # they hold password hashes, token digests, emails.
    if url.startswith("sqlite"):
        return sqlite.engine_options(url)
    return {
        "hide_parameters": True,
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout,
        "pool_recycle": settings.db_pool_recycle,
        "pool_pre_ping": settings.db_pool_pre_ping,
        "connect_args": {
            "connect_timeout": 5,
            "options": f"-c statement_timeout={settings.db_statement_timeout_ms}",
            "application_name": "gatehouse",
        },
    }


def _flask_config(settings: Settings) -> dict[str, Any]:
    binds = {}
    if settings.database_replica_url:
        replica = sqlalchemy_url(settings.database_replica_url)
        binds["replica"] = {"url": replica, **_engine_options(settings, replica)}
    return {
        APP_CONFIG_KEY: settings,
        "SECRET_KEY": settings.secret_key,
        "TESTING": settings.env == "test",
        "SQLALCHEMY_DATABASE_URI": settings.sqlalchemy_url,
        "SQLALCHEMY_ENGINE_OPTIONS": _engine_options(settings, settings.sqlalchemy_url),
        "SQLALCHEMY_BINDS": binds,
        "MAX_CONTENT_LENGTH": 64 * 1024,
        "API_TITLE": API_TITLE,
        "API_VERSION": API_VERSION,
        "OPENAPI_VERSION": "3.0.3",
        "OPENAPI_URL_PREFIX": "/api",
        "OPENAPI_JSON_PATH": "openapi.json",
        "OPENAPI_SWAGGER_UI_PATH": "docs",
        "OPENAPI_SWAGGER_UI_URL": "/api/docs/assets/",
        "API_SPEC_OPTIONS": {
            "info": {"description": "Users, authentication, RBAC and audit. See /api/docs."},
            "components": {
                "securitySchemes": {
                    "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                    "apiKeyAuth": {
                        "type": "apiKey",
                        "in": "header",
                        "name": "X-API-Key",
                        "description": "An API key (`gh_live_…`), limited to its scopes: "
                        "each operation that accepts one names the scope it needs.",
                    },
                }
            },
        },
    }


def _load_keyring(settings: Settings) -> KeyRing:
    """JWT_KEYS or JWT_KEYS_FILE; outside production a development key file is made if absent."""
    try:
        if settings.jwt_keys or settings.jwt_keys_file:
            return KeyRing.load(settings.jwt_keys, settings.jwt_keys_file)
        path = Path(DEV_KEYS_FILE)
        if path.exists():
            return KeyRing.load(None, str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_new_keyfile(path)
    except KeyRingError as exc:
        name = "JWT_KEYS" if settings.jwt_keys else "JWT_KEYS_FILE"
        raise ConfigError(f"{name}: {exc}") from None


def create_app(
    settings: Settings | None = None, jobs_settings: JobsSettings | None = None
) -> Flask:
    """Build the application from `settings` and `jobs_settings`. Without `settings`, both are
    read from the process environment, so that a bad variable of either stops any process at
    start-up, the API's too; given `settings` alone (tests, tools), the jobs settings are their
    defaults, never the shell's."""
    if settings is None:
        settings = Settings.from_env()
        jobs_settings = jobs_settings or JobsSettings.from_env()
    jobs_settings = jobs_settings or JobsSettings()
    # Named after the package, not this module: the app's name and logger are "webapp", its
    # root path the package's folder, its instance folder `instance/` next to the package.
    app = Flask("webapp")
    app.config.update(_flask_config(settings))
    # The attribute is the default provider's (app.json's class); JSONProvider does not declare it.
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.session_interface = NoSessions()
    if settings.trusted_proxies:
        # Flask's documented way to wrap the WSGI app; mypy sees the assignment of a method.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app,
            x_for=settings.trusted_proxies,
            x_proto=settings.trusted_proxies,
            x_host=settings.trusted_proxies,
        )

    db.init_app(app)
    migrate.init_app(app, db, directory=str(models.MIGRATIONS_DIR))
    app.extensions["gatehouse_redis"] = RedisStore(
        settings.redis_url, settings.redis_timeout, settings.cache_local_ttl
    )
    tokens.init_app(app, _load_keyring(settings))
    app.extensions["gatehouse_encryption"] = encryption.load(
        settings.encryption_keys, secret_key=settings.secret_key
    )
    request_id.init_app(app)
    hostile.init_app(app)  # first before_request hook: hostile input never reaches the others
    headers.init_app(app)
    ratelimit.init_app(app)
    api.init_app(app)
    problems.init_app(app)  # after flask-smorest, so that its error handler is replaced
    observability.init_app(
        app,
        log_level=settings.log_level,
        # Readable lines in a developer's terminal; JSON wherever a collector reads them.
        log_format="text" if settings.env == "development" else "json",
        access_log_sample=settings.access_log_sample,
        access_log_slow_ms=settings.access_log_slow_ms,
        metrics_port=settings.metrics_port,
        otel_endpoint=settings.otel_exporter_otlp_endpoint,
    )
    ops_metrics.init_app(app, webhook_metrics.StateCollector)
    ratelimit.warn_if_off_in_production(app)  # once logging is set up
    register_blueprints(app, api, admin_jobs=admin_jobs_blp)
    if settings.env == "test" and settings.pact_provider_states:
        # The contract tests' hook (docs/contracts.md); production refuses the setting, and
        # development ignores it: only a test database may be filled this way.
        app.register_blueprint(provider_states.bp)
    webhooks.install()  # audit records → domain events → webhook deliveries
    cli.init_app(app)
    jobs_config.init_app(app, jobs_settings)
    app.cli.add_command(jobs_cli)
    return app
