"""WSGI entry point: `gunicorn -c gunicorn.conf.py wsgi:app`, `flask --app wsgi ...`."""

from webapp import create_app
from webapp.config import ConfigError


def _build():  # type: ignore[no-untyped-def]
    try:
        return create_app()
    except ConfigError as exc:
        raise SystemExit(f"configuration error: {exc}") from None


app = _build()
