"""Configuration: the environment is read (12-factor) by settings classes declared like `Settings`.

Each setting of the API is declared once, as a field of `Settings` (`webapp.config.settings`,
pydantic-settings): its variable (the field's name in capitals unless an alias says otherwise),
type, default, constraints and help text. The job workers' settings (SMTP, mail sender, retries,
leases) are declared the same way by `jobs.settings.JobsSettings`: both build on `DeclaredSettings`
(`webapp.config.base`). The README's configuration tables are generated from these declarations
and from `PROCESS_VARIABLES` (`webapp.config.process`) by `python -m scripts.settings_table`, and a
test keeps them equal.

`from_env()` parses and validates every variable at start-up; a bad value raises `ConfigError`
whose one-line message names the variable, never its value, so the process stops with one clear
line. Rules between settings and production's refusals of the development defaults are the
explicit checks of `validate()` (`webapp.config.checks`).

Code imports what it needs from `webapp.config`, not from the modules below it.
"""

from __future__ import annotations

from webapp.config.access import APP_CONFIG_KEY, current_settings, settings_of
from webapp.config.base import ConfigError, DeclaredSettings
from webapp.config.checks import (
    DEV_KEYS_FILE,
    DEV_SECRET,
    MAX_PRODUCTION_REUSE_GRACE,
    PUBLISHED_SECRETS,
)
from webapp.config.database import sqlalchemy_url
from webapp.config.process import PROCESS_VARIABLES, ProcessVariable
from webapp.config.settings import (
    DEV_DATABASE_URL,
    CommaList,
    Environment,
    LogLevel,
    Settings,
    env_name,
)

__all__ = [
    "APP_CONFIG_KEY",
    "DEV_DATABASE_URL",
    "DEV_KEYS_FILE",
    "DEV_SECRET",
    "MAX_PRODUCTION_REUSE_GRACE",
    "PROCESS_VARIABLES",
    "PUBLISHED_SECRETS",
    "CommaList",
    "ConfigError",
    "DeclaredSettings",
    "Environment",
    "LogLevel",
    "ProcessVariable",
    "Settings",
    "current_settings",
    "env_name",
    "settings_of",
    "sqlalchemy_url",
]
