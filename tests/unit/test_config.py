"""Configuration comes from the environment only, is validated at start-up with an error naming the
bad variable, and production refuses the development defaults."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.settings import JobsSettings
from webapp.config import (
    DEV_KEYS_FILE,
    DEV_SECRET,
    ConfigError,
    Settings,
    env_name,
    sqlalchemy_url,
)
from webapp.security.keys import generate_jwk

ROOT = Path(__file__).resolve().parents[2]
# Every variable Settings and JobsSettings read, taken from their declarations so that a new one is
# covered too.
VARIABLES = sorted(
    env_name(field, declared_in)
    for declared_in in (Settings, JobsSettings)
    for field in declared_in.model_fields
)
STRONG_SECRET = secrets.token_urlsafe(48)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def production(monkeypatch):
    """A complete, valid production environment; tests remove or spoil one variable."""
    values = {
        "GATEHOUSE_ENV": "production",
        "SECRET_KEY": STRONG_SECRET,
        "DATABASE_URL": "postgresql://gatehouse@db.internal:5432/gatehouse",
        "REDIS_URL": "redis://cache.internal:6379/0",
        "JWT_KEYS": json.dumps({"keys": [generate_jwk("EdDSA")]}),
        "ENCRYPTION_KEYS": "k1:" + base64.b64encode(os.urandom(32)).decode(),
        "PUBLIC_BASE_URL": "https://id.example",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def test_the_parser_reads_the_documented_variables():
    expected = {"GATEHOUSE_ENV", "DATABASE_URL", "DATABASE_REPLICA_URL", "REDIS_URL", "SMTP_URL"}
    expected |= {"MAIL_FROM", "CORS_ORIGINS", "JWT_KEYS", "JWT_KEYS_FILE", "ACCESS_TOKEN_TTL"}
    expected |= {"REFRESH_TOKEN_TTL", "LOG_LEVEL", "OTEL_EXPORTER_OTLP_ENDPOINT"}
    expected |= {"RATELIMIT_ENABLED", "WEB_CONCURRENCY", "TRUSTED_PROXIES", "SECRET_KEY"}
    assert expected <= set(VARIABLES)


def test_an_empty_environment_gives_the_development_defaults():
    settings = Settings.from_env()
    assert settings == Settings()
    assert settings.env == "development"
    assert not settings.is_production
    assert settings.sqlalchemy_url.startswith("sqlite:///")
    assert settings.redis_url is None
    assert settings.ratelimit_enabled is True
    assert settings.access_token_ttl == 900
    assert settings.cors_origins == ()
    assert settings.trusted_proxies == 0


def test_variables_are_parsed_into_typed_settings(monkeypatch):
    monkeypatch.setenv("ACCESS_TOKEN_TTL", "600")
    monkeypatch.setenv("RATELIMIT_ENABLED", "false")
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example,https://b.example")
    monkeypatch.setenv("DB_POOL_TIMEOUT", "2.5")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://id.example/")
    settings = Settings.from_env()
    assert settings.access_token_ttl == 600
    assert settings.ratelimit_enabled is False
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.db_pool_timeout == 2.5
    assert settings.log_level == "DEBUG"
    assert settings.public_base_url == "https://id.example"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ACCESS_TOKEN_TTL", "soon"),
        ("DB_POOL_SIZE", "ten"),
        ("TRUSTED_PROXIES", "1.5"),
        ("RATELIMIT_ENABLED", "maybe"),
        ("DB_POOL_TIMEOUT", "fast"),
        ("METRICS_PORT", "http"),
    ],
)
def test_a_value_of_the_wrong_type_names_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        Settings.from_env()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ACCESS_TOKEN_TTL", "0"),
        ("LOCKOUT_THRESHOLD", "-1"),
        ("TRUSTED_PROXIES", "-1"),
        ("CACHE_LOCAL_TTL", "-1"),
        ("LOG_LEVEL", "chatty"),
        ("DATABASE_URL", "mysql://db/gatehouse"),
        ("METRICS_PORT", "70000"),
        ("METRICS_PORT", "0"),
    ],
)
def test_a_value_out_of_range_names_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        Settings.from_env()


def test_an_access_token_outliving_the_refresh_token_is_refused(monkeypatch):
    monkeypatch.setenv("ACCESS_TOKEN_TTL", "3600")
    monkeypatch.setenv("REFRESH_TOKEN_TTL", "600")
    with pytest.raises(ConfigError, match="ACCESS_TOKEN_TTL"):
        Settings.from_env()


def test_unverified_sign_ups_expire_after_a_week_unless_configured(monkeypatch):
    assert Settings.from_env().unverified_account_ttl == 604800
    monkeypatch.setenv("UNVERIFIED_ACCOUNT_TTL", "172800")
    assert Settings.from_env().unverified_account_ttl == 172800


def test_a_sign_up_expiring_before_its_verification_link_is_refused(monkeypatch):
    monkeypatch.setenv("UNVERIFIED_ACCOUNT_TTL", "3600")
    monkeypatch.setenv("EMAIL_TOKEN_TTL", "86400")
    with pytest.raises(ConfigError, match="UNVERIFIED_ACCOUNT_TTL"):
        Settings.from_env()


def test_an_unknown_environment_name_is_refused(monkeypatch):
    monkeypatch.setenv("GATEHOUSE_ENV", "staging")
    with pytest.raises(ConfigError, match="GATEHOUSE_ENV") as caught:
        Settings.from_env()
    assert "staging" in str(caught.value)


def test_both_jwt_key_sources_at_once_are_refused(monkeypatch):
    monkeypatch.setenv("JWT_KEYS", "{}")
    monkeypatch.setenv("JWT_KEYS_FILE", "/run/secrets/jwt.json")
    with pytest.raises(ConfigError, match="JWT_KEYS"):
        Settings.from_env()


def test_a_complete_production_environment_is_accepted(production):
    settings = Settings.from_env()
    assert settings.is_production
    assert settings.sqlalchemy_url == "postgresql+psycopg://gatehouse@db.internal:5432/gatehouse"


@pytest.mark.parametrize("secret", [None, DEV_SECRET, "short-secret"])
def test_production_refuses_a_default_or_weak_secret_key(monkeypatch, production, secret):
    if secret is None:
        monkeypatch.delenv("SECRET_KEY")
    else:
        monkeypatch.setenv("SECRET_KEY", secret)
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        Settings.from_env()


def test_production_refuses_to_run_without_jwt_keys(monkeypatch, production):
    monkeypatch.delenv("JWT_KEYS")
    with pytest.raises(ConfigError, match="JWT_KEYS"):
        Settings.from_env()


def test_production_refuses_the_development_key_file(monkeypatch, production):
    monkeypatch.delenv("JWT_KEYS")
    monkeypatch.setenv("JWT_KEYS_FILE", DEV_KEYS_FILE)
    with pytest.raises(ConfigError, match="JWT_KEYS_FILE"):
        Settings.from_env()


@pytest.mark.parametrize("url", [None, "sqlite:///instance/gatehouse.db"])
def test_production_refuses_sqlite(monkeypatch, production, url):
    if url is None:
        monkeypatch.delenv("DATABASE_URL")
    else:
        monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        Settings.from_env()


def test_production_refuses_to_run_without_redis(monkeypatch, production):
    monkeypatch.delenv("REDIS_URL")
    with pytest.raises(ConfigError, match="REDIS_URL"):
        Settings.from_env()


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgresql://u:p@h:5432/d", "postgresql+psycopg://u:p@h:5432/d"),
        ("postgres://u@h/d", "postgresql+psycopg://u@h/d"),
        ("postgresql+psycopg2://u@h/d", "postgresql+psycopg://u@h/d"),
        ("postgresql+psycopg://u@h/d", "postgresql+psycopg://u@h/d"),
        ("sqlite:///instance/x.db", "sqlite:///instance/x.db"),
    ],
)
def test_plain_postgresql_urls_use_psycopg_3(given, used):
    assert sqlalchemy_url(given) == used


def test_the_database_url_from_the_environment_uses_psycopg_3(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://gatehouse@db:5432/gatehouse")
    assert Settings.from_env().sqlalchemy_url == "postgresql+psycopg://gatehouse@db:5432/gatehouse"


def test_overrides_are_validated_like_the_environment():
    with pytest.raises(ConfigError, match="ACCESS_TOKEN_TTL"):
        Settings().with_overrides(access_token_ttl=0)
    with pytest.raises(ConfigError, match="no_such_setting"):
        Settings().with_overrides(no_such_setting=1)


def _import_wsgi(**variables: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), **variables}
    return subprocess.run(
        [sys.executable, "-c", "import wsgi"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"ACCESS_TOKEN_TTL": "soon"}, "ACCESS_TOKEN_TTL"),
        ({"GATEHOUSE_ENV": "staging"}, "GATEHOUSE_ENV"),
        ({"GATEHOUSE_ENV": "production", "SECRET_KEY": DEV_SECRET}, "SECRET_KEY"),
        ({"JWT_KEYS": "not json"}, "JWT_KEYS"),
        # The API validates the job workers' settings too: a bad one stops every process.
        ({"SMTP_URL": "http://mail.example.com"}, "SMTP_URL"),
        ({"JOBS_LEASE": "soon"}, "JOBS_LEASE"),
    ],
)
def test_starting_with_a_bad_variable_exits_with_one_line_naming_it(variables, named):
    result = _import_wsgi(**variables)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]
    assert "Traceback" not in result.stderr


def test_an_optional_variable_set_empty_is_unset(monkeypatch):
    for name in ("METRICS_PORT", "REDIS_URL", "DATABASE_REPLICA_URL", "API_KEY_PEPPER"):
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("MAIL_FROM", "")  # not optional: the empty value is kept

    monkeypatch.setenv("SMTP_USERNAME", "")

    settings, jobs_settings = Settings.from_env(), JobsSettings.from_env()

    assert (settings.metrics_port, settings.redis_url, settings.api_key_pepper) == (None,) * 3
    assert settings.database_replica_url is None
    assert (jobs_settings.smtp_username, jobs_settings.mail_from) == (None, "")


@pytest.mark.parametrize(
    ("declared_in", "name", "value"),
    [
        (Settings, "DATABASE_URL", "mysql://gatehouse:hunter2-secret@db/gatehouse"),
        (JobsSettings, "SMTP_URL", "http://mailer:hunter2-secret@mail.example.com"),
        (Settings, "ENCRYPTION_KEYS", "k1:hunter2-secret"),
    ],
)
def test_a_refused_value_is_never_echoed(monkeypatch, declared_in, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name) as caught:
        declared_in.from_env()
    assert "hunter2" not in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_flask_command_beside_make_run_opens_make_runs_database():
    """`flask --app wsgi …` in a second terminal (the docs' walk-throughs) has no DATABASE_URL:
    the default must name the file `make run` serves (scripts/dev_run.py), not a path that
    Flask-SQLAlchemy resolves inside the instance folder a second time."""
    from scripts import dev_run
    from webapp import create_app
    from webapp.extensions import db

    keys = json.dumps({"keys": [generate_jwk()]})
    app = create_app(Settings(jwt_keys=keys))

    with app.app_context():
        served = db.engine.url.database
    assert served == str(dev_run.INSTANCE / "gatehouse.db")
    assert served == str(Path(app.instance_path) / "gatehouse.db")
