"""The Flask application that job functions run in.

`flask --app wsgi jobs worker` binds its app here before it forks its job process, which uses
the worker's app (settings, database engine) without building another. A stock `rq worker`
process, which binds nothing, builds one from the environment on first use.

A forked job process must not share the parent's pooled database connections (the parent's
dispatcher thread keeps using them): it drops the inherited pool and opens its own. On SQLite
that is not enough: SQLite keeps a file's lock state per process, so a process forked while the
dispatcher thread had a connection open inherits that state and finds the file locked for
good. There the worker forks only under `fork_guard()`, which the dispatcher holds for each pass
(its connections are unpooled and closed when the pass ends, see `webapp.sqlite`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask

from webapp.sqlite import is_file_database

_app: Flask | None = None
_fork_hook_installed = False
_fork_lock = threading.Lock()


def bind_app(app: Flask) -> None:
    global _app, _fork_hook_installed
    _app = app
    if not _fork_hook_installed:
        os.register_at_fork(after_in_child=_forget_inherited_connections)
        _fork_hook_installed = True


def app() -> Flask:
    global _app
    if _app is None:
        from webapp import create_app

        bind_app(create_app())
    assert _app is not None
    return _app


@contextmanager
def fork_guard() -> Iterator[None]:
    """Excludes a fork from database work in other threads; a no-op unless the database is a
    SQLite file (PostgreSQL connections can be left behind by a fork safely)."""
    if _app is None or not is_file_database(str(_app.config["SQLALCHEMY_DATABASE_URI"])):
        yield
        return
    with _fork_lock:
        yield


def _forget_inherited_connections() -> None:
    global _fork_lock
    _fork_lock = threading.Lock()  # the parent's was copied held
    if _app is None:
        return
    from webapp.extensions import db

    with _app.app_context():
        for engine in db.engines.values():
            engine.dispose(close=False)
