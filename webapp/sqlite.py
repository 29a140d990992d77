"""SQLite, the embedded development default, set up for several processes.

`make run` has the API (gunicorn workers), the job worker, its dispatcher thread and its forked
job processes all on one database file. SQLite's defaults are made for one process:

- the rollback journal blocks every reader while a writer commits: WAL lets readers go on
  beside the one writer;
- a writer that finds the database busy fails after pysqlite's 5 s: a busy timeout of
  `BUSY_TIMEOUT_MS` waits instead (write transactions here last milliseconds);
- SQLite keeps the lock state of a file per process: a connection open when a process forks
  (a pooled one of the job worker's dispatcher thread) leaves the child believing the file is
  locked, and the child's own connections then fail with "database is locked". So file
  databases use no pool (`NullPool`): a connection is closed when its session ends, and the
  worker forks a job process only while the dispatcher holds none (`jobs.runtime.fork_guard`).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

BUSY_TIMEOUT_MS = 15_000
_installed = False


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def is_file_database(url: str) -> bool:
    """A SQLite URL naming a file (not `sqlite://` or `:memory:`, which live in one connection)."""
    if not is_sqlite(url):
        return False
    path = url.split("///", 1)[1] if "///" in url else ""
    return bool(path) and ":memory:" not in path and "mode=memory" not in path


def engine_options(url: str) -> dict[str, Any]:
    install()
    options: dict[str, Any] = {
        "connect_args": {"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
        "hide_parameters": True,
    }
    if is_file_database(url):
        options["poolclass"] = NullPool
    return options


def install() -> None:
    """Set every new SQLite connection up (once per process; other drivers are left alone)."""
    global _installed
    if not _installed:
        event.listen(Engine, "connect", _on_connect)
        _installed = True


def _on_connect(dbapi_connection: Any, _record: Any) -> None:
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # WAL is a property of the file (kept once set); in-memory databases answer "memory".
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")  # durable enough with WAL, far fewer fsyncs
    finally:
        cursor.close()
