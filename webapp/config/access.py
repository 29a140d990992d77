"""How code reaches an application's settings: `create_app` keeps them in the app's config."""

from __future__ import annotations

from flask import Flask, current_app

from webapp.config.settings import Settings

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
