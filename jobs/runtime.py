"""The Flask application that job functions run in.

`flask --app wsgi jobs worker` binds its app here before it forks work-horses, so a horse uses
the worker's app (settings, database engine) without building another. A stock `rq worker`
process, which binds nothing, builds one from the environment on first use.

Forked horses must not share the parent's pooled database connections (the parent's dispatcher
thread keeps using them): each horse drops the inherited pool and opens its own.
"""

from __future__ import annotations

import os

from flask import Flask

_app: Flask | None = None
_fork_hook_installed = False


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


def _forget_inherited_connections() -> None:
    if _app is None:
        return
    from webapp.extensions import db

    with _app.app_context():
        for engine in db.engines.values():
            engine.dispose(close=False)
