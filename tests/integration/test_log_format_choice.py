"""The application factory picks the log format: readable text in development, JSON lines in
tests and production (what collectors parse)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from pythonjsonlogger.core import BaseJsonFormatter

import observability.logging as log_setup


def root_formatter() -> logging.Formatter | None:
    [handler] = [h for h in logging.getLogger().handlers if h.get_name() == log_setup.HANDLER_NAME]
    return handler.formatter


@pytest.fixture
def restore_root_logging() -> Iterator[None]:
    level = logging.getLogger().level
    yield
    log_setup.configure(logging.getLevelName(level), "json")


@pytest.mark.usefixtures("restore_root_logging")
@pytest.mark.parametrize(
    "overrides", [{"env": "test"}, {"env": "production", "ratelimit_enabled": True}]
)
def test_tests_and_production_log_json(make_app: Callable[..., Flask], overrides):
    make_app(env="development")  # text first, so that the app under test has to switch back

    make_app(**overrides)

    assert isinstance(root_formatter(), BaseJsonFormatter)


@pytest.mark.usefixtures("restore_root_logging")
def test_development_logs_text(make_app: Callable[..., Flask]):
    make_app(env="development")

    assert isinstance(root_formatter(), log_setup.TextFormatter)
