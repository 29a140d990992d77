"""The Flask application that job functions run in.

Whoever runs jobs binds its application here first: `flask --app wsgi jobs worker` (the one way
to run a worker) binds the app the command was given before it forks its job process, which
uses that app (settings, database engine) without building another; tests bind theirs. The jobs
package never builds an application: `webapp.create_app` is the composition root's, and the root
imports `jobs`, not the other way round. A process that bound none (a stock `rq worker`) fails
each job with an error saying so; its message stays `enqueued` in the outbox and goes out through
a real worker once its lease ends.

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

from webapp.extensions import db
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
    """The bound application; a RuntimeError if this process bound none."""
    if _app is None:
        raise RuntimeError(
            "no application bound for jobs: run workers with `flask --app wsgi jobs worker`"
        )
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
    with _app.app_context():
        for engine in db.engines.values():
            engine.dispose(close=False)
