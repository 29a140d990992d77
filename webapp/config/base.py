"""The shared base of Gatehouse's settings classes: construction, the environment source, and the
one-line `ConfigError` that names a bad variable, never its value."""

from __future__ import annotations

from typing import Any, Self

from pydantic import ValidationError
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)


class ConfigError(Exception):
    """A configuration variable is missing or invalid; the message names it."""


class DeclaredSettings(BaseSettings):
    """What every settings class of Gatehouse shares: `webapp.config.Settings`, and
    `jobs.settings.JobsSettings` for the job workers. Built from defaults plus what it is given, or
    from the environment by `from_env()`; a bad value raises `ConfigError` naming its variable.
    Immutable: tests derive variants with `with_overrides`."""

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
            variable_of(name, cls): name
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


def variable_of(field: str, declared_in: type[DeclaredSettings]) -> str:
    """The environment variable of a field of a settings class: its alias, else its name in
    capitals."""
    alias = declared_in.model_fields[field].validation_alias
    return alias if isinstance(alias, str) else field.upper()


def _message(declared_in: type[DeclaredSettings], error: ErrorDetails) -> str:
    """One line naming the variable, never its value (it may be a secret)."""
    fields = declared_in.model_fields
    loc = str(error["loc"][0]) if error["loc"] else ""
    # Errors are located by field name or by alias; both lead to the field.
    by_key = {
        **{name: name for name in fields},
        **{variable_of(name, declared_in).lower(): name for name in fields},
    }
    field = by_key.get(loc.lower(), loc)
    name = variable_of(field, declared_in) if field in fields else loc.upper()
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
