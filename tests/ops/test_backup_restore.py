"""Restore drill: scripts/backup.sh dumps a populated database (pg_dump, custom format),
scripts/restore.sh restores it into a new one, and every table comes back with the same rows.

And the guards around it: restore.sh never picks its target from DATABASE_URL and refuses a
non-empty one unless RESTORE_FORCE names it; archives never overwrite each other; every backup is
recorded in backup_runs, which the API exposes as the freshness metric of GatehouseBackupStale."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from flask_migrate import upgrade

from tests.support.accounts import STRONG_PASSWORD
from tests.support.backups import (
    BACKUP,
    RESTORE,
    client_bin_dir,
    migrate,
    run_script,
    server_major,
    table_fingerprints,
)
from tests.support.database import (
    BASE_DATABASE_URL,
    DB_NAME_PREFIX,
    drop_database,
    fresh_database,
    with_database,
)
from tests.support.ops import ROOT, output, run
from webapp import create_app
from webapp.config import Settings
from webapp.extensions import db


def worker_suffix() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or "0"


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
    assert re.fullmatch(r"gatehouse-\d{8}T\d{6}Z-[0-9a-f]{8}\.dump", archive.name)
    assert archive.read_bytes().startswith(b"PGDMP")  # pg_dump's custom format
    assert (tmp_path / f"{archive.name}.sha256").read_text().split()[0]
    assert not list(tmp_path.glob("*.partial"))

    restored = run_script(RESTORE, str(archive), target, bin_dir=bin_dir)
    assert restored.returncode == 0, output(restored)
    assert table_fingerprints(target) == before

    # Again over the restored copy, forced by its name: RESTORE_CLEAN replaces the objects in
    # one transaction.
    target_name = target.rsplit("/", 1)[1]
    again = run_script(
        RESTORE,
        str(archive),
        target,
        bin_dir=bin_dir,
        RESTORE_CLEAN="1",
        RESTORE_FORCE=target_name,
    )
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
    source, _, settings = databases
    migrate(settings)
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


# --- restore.sh: the target is explicit, a non-empty one is forced by name -----------------------


def relations(url: str) -> dict[str, int]:
    """table -> row count, for every table in public."""
    return {table: count for table, (count, _) in table_fingerprints(url).items()}


def make_precious(url: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE precious (id int PRIMARY KEY)")
        conn.execute("INSERT INTO precious VALUES (1), (2), (3)")


@pytest.fixture
def pg_bin(databases: tuple[str, str, Settings]) -> Path:
    return client_bin_dir(server_major(databases[0]))


@pytest.fixture
def archive(databases: tuple[str, str, Settings], pg_bin: Path, tmp_path: Path) -> Path:
    source, _, settings = databases
    migrate(settings)
    dumped = run_script(BACKUP, source, bin_dir=pg_bin, BACKUP_DIR=str(tmp_path))
    assert dumped.returncode == 0, output(dumped)
    return Path(dumped.stdout.strip().splitlines()[-1])


def test_restore_never_takes_its_target_from_database_url(
    databases: tuple[str, str, Settings], archive: Path, pg_bin: Path
) -> None:
    _, target, _ = databases
    # The operator's shell has the application's URL exported: without a named target, refuse.
    implicit = run_script(
        RESTORE, str(archive), DATABASE_URL=target, RESTORE_CLEAN="1", bin_dir=pg_bin
    )
    assert implicit.returncode == 2, output(implicit)
    assert "DATABASE_URL is never used" in implicit.stderr
    assert relations(target) == {}

    # Named in the environment on purpose, it is explicit; an extension's view (what some
    # providers put in every new database) does not make the target non-empty.
    with psycopg.connect(target) as conn:
        conn.execute("CREATE EXTENSION pg_buffercache")
    named = run_script(RESTORE, str(archive), RESTORE_TARGET_URL=target, bin_dir=pg_bin)
    assert named.returncode == 0, output(named)
    assert relations(target)["users"] == 0
    assert "alembic_version" in relations(target)


def test_restore_refuses_a_non_empty_target_unless_forced_by_its_name(
    databases: tuple[str, str, Settings], archive: Path, pg_bin: Path
) -> None:
    source, target, _ = databases
    target_name = target.rsplit("/", 1)[1]
    make_precious(target)

    for force in ({}, {"RESTORE_FORCE": "1"}, {"RESTORE_FORCE": source.rsplit("/", 1)[1]}):
        refused = run_script(
            RESTORE, str(archive), target, RESTORE_CLEAN="1", **force, bin_dir=pg_bin
        )
        assert refused.returncode == 3, (force, output(refused))
        assert f'"{target_name}" is not empty (1 relations)' in refused.stderr
        assert f"RESTORE_FORCE={target_name}" in refused.stderr
        assert relations(target) == {"precious": 3}

    # A view, a sequence or a table in another schema make a database non-empty too.
    with psycopg.connect(target) as conn:
        conn.execute("DROP TABLE precious")
        conn.execute("CREATE SCHEMA elsewhere")
        conn.execute("CREATE SEQUENCE elsewhere.counter")
    refused = run_script(RESTORE, str(archive), target, bin_dir=pg_bin)
    assert refused.returncode == 3, output(refused)
    assert relations(target) == {}

    forced = run_script(RESTORE, str(archive), target, RESTORE_FORCE=target_name, bin_dir=pg_bin)
    assert forced.returncode == 0, output(forced)
    assert "users" in relations(target)


def test_restore_refuses_a_target_it_cannot_inspect(archive: Path, pg_bin: Path) -> None:
    missing = with_database(BASE_DATABASE_URL, f"{DB_NAME_PREFIX}_backup_missing")
    refused = run_script(RESTORE, str(archive), missing, bin_dir=pg_bin)
    assert refused.returncode == 1, output(refused)
    assert "cannot inspect the target database" in refused.stderr


# --- backup.sh: names never collide, every backup is recorded ------------------------------------


def test_backups_in_the_same_second_get_distinct_archives_and_nothing_is_overwritten(
    archive: Path, databases: tuple[str, str, Settings], pg_bin: Path
) -> None:
    source, _, _ = databases
    names = {archive.name}
    for _ in range(3):
        dumped = run_script(BACKUP, source, BACKUP_DIR=str(archive.parent), bin_dir=pg_bin)
        assert dumped.returncode == 0, output(dumped)
        names.add(Path(dumped.stdout.strip().splitlines()[-1]).name)
    assert len(names) == 4
    assert {p.name for p in archive.parent.glob("*.dump")} == names
    assert not list(archive.parent.glob("*.partial*"))

    before = archive.read_bytes()
    clash = run_script(BACKUP, source, BACKUP_FILE=str(archive), bin_dir=pg_bin)
    assert clash.returncode == 2, output(clash)
    assert "exists; not overwriting it" in clash.stderr
    assert archive.read_bytes() == before
    # Archives hold password hashes and tokens: owner-only.
    assert archive.stat().st_mode & 0o077 == 0


def metric_samples(settings: Settings) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    app = create_app(settings)
    body = app.test_client().get("/metrics").get_data(as_text=True)
    with app.app_context():
        db.engine.dispose()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name.startswith("gatehouse_backup_")
    }


def test_each_backup_is_recorded_exposed_as_a_metric_and_kept_by_a_restore(
    databases: tuple[str, str, Settings], pg_bin: Path, tmp_path: Path
) -> None:
    source, target, settings = databases
    migrate(settings)
    assert metric_samples(settings) == {}  # no backup yet: absent, GatehouseBackupStale's case

    first = run_script(BACKUP, source, BACKUP_DIR=str(tmp_path), bin_dir=pg_bin)
    assert first.returncode == 0, output(first)
    started = time.time()
    second = run_script(BACKUP, source, BACKUP_DIR=str(tmp_path), bin_dir=pg_bin)
    assert second.returncode == 0, output(second)
    newest = Path(second.stdout.strip().splitlines()[-1])

    with psycopg.connect(source) as conn:
        rows = conn.execute(
            "SELECT archive, size_bytes, extract(epoch FROM finished_at), "
            "finished_at >= started_at FROM backup_runs ORDER BY id"
        ).fetchall()
    assert [row[0] for row in rows] == [
        Path(first.stdout.strip().splitlines()[-1]).name,
        newest.name,
    ]
    assert rows[1][1] == newest.stat().st_size
    assert all(row[3] for row in rows)

    samples = metric_samples(settings)
    assert samples["gatehouse_backup_last_success_timestamp_seconds"] == float(rows[1][2])
    assert started - 5 <= samples["gatehouse_backup_last_success_timestamp_seconds"] <= time.time()
    assert samples["gatehouse_backup_last_size_bytes"] == newest.stat().st_size

    # The second archive holds the first one's row: a restored database keeps its history.
    restored = run_script(RESTORE, str(newest), target, bin_dir=pg_bin)
    assert restored.returncode == 0, output(restored)
    with psycopg.connect(target) as conn:
        kept = conn.execute("SELECT archive FROM backup_runs").fetchall()
    assert kept == [(rows[0][0],)]


def test_a_backup_that_cannot_be_recorded_keeps_its_archive_and_fails(
    databases: tuple[str, str, Settings], pg_bin: Path, tmp_path: Path
) -> None:
    source, _, _ = databases  # not migrated: there is no backup_runs table
    dumped = run_script(BACKUP, source, BACKUP_DIR=str(tmp_path), bin_dir=pg_bin)
    assert dumped.returncode == 3, output(dumped)
    assert "could not be recorded in backup_runs" in dumped.stderr
    archive = Path(dumped.stdout.strip().splitlines()[-1])
    assert archive.read_bytes().startswith(b"PGDMP")
    assert (tmp_path / f"{archive.name}.sha256").is_file()


def test_the_default_backup_dir_is_ignored_by_git() -> None:
    for path in ("backups/gatehouse-20260101T000000Z-0123abcd.dump", "backups/x.dump.sha256"):
        checked = run(["git", "check-ignore", "--no-index", "--quiet", path], cwd=ROOT)
        assert checked.returncode == 0, f"{path} is not ignored by git"
