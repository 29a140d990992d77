"""WSGI entry point: `gunicorn -c gunicorn.conf.py wsgi:app`, `flask --app wsgi ...`."""

import sys

from webapp import create_app
from webapp.config import ConfigError

# gunicorn stops (instead of respawning workers forever) when a worker exits with this code.
APP_LOAD_ERROR = 4


def _build():  # type: ignore[no-untyped-def]
    try:
        return create_app()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        sys.exit(APP_LOAD_ERROR)


app = _build()
