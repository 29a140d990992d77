"""Pure helpers of scripts/testenv.py, which provides PostgreSQL and Redis to the tests."""

from __future__ import annotations

import importlib.util
import socket
import sys
from pathlib import Path
from types import ModuleType

import psycopg
import pytest
from sqlalchemy.engine import make_url

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "testenv.py"


def _load_testenv() -> ModuleType:
    spec = importlib.util.spec_from_file_location("testenv", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


testenv = _load_testenv()


def test_socket_url_is_understood_by_psycopg_and_sqlalchemy() -> None:
    url = testenv.socket_postgres_url("postgres", "test", Path("/tmp/gh-pg/data"), 5432)

    params = psycopg.conninfo.conninfo_to_dict(url)
    assert params == {
        "user": "postgres",
        "dbname": "test",
        "host": "/tmp/gh-pg/data",
        "port": "5432",
    }
    sa_url = make_url("postgresql+psycopg://" + url.removeprefix("postgresql://"))
    assert sa_url.host is None
    assert sa_url.database == "test"
    assert sa_url.query["host"] == "/tmp/gh-pg/data"
    assert testenv.is_local_postgres(url)
    assert testenv.database_name(url) == "test"


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("postgresql://postgres@127.0.0.1:5432/test", True),
        ("postgresql://postgres@localhost/test", True),
        ("postgresql://postgres@/test", True),
        ("postgresql://postgres@/test?host=/var/run/postgresql", True),
        ("postgresql://app:secret@db.example.com:5432/gatehouse", False),
    ],
)
def test_is_local_postgres(url: str, local: bool) -> None:
    assert testenv.is_local_postgres(url) is local


def test_redact_hides_passwords_only() -> None:
    assert (
        testenv.redact("postgresql://app:s3cr%40t@db:5432/gh?sslmode=require")
        == "postgresql://app:***@db:5432/gh?sslmode=require"
    )
    assert testenv.redact("redis://:hunter2@127.0.0.1:6379/1") == "redis://:***@127.0.0.1:6379/1"
    plain = "postgresql://postgres@127.0.0.1:5432/test"
    assert testenv.redact(plain) == plain


def test_database_name_and_redis_db_index_defaults() -> None:
    assert testenv.database_name("postgresql://postgres@127.0.0.1:5432/other") == "other"
    assert testenv.database_name("postgresql://postgres@127.0.0.1:5432") == "test"
    assert testenv.redis_db_index("redis://127.0.0.1:6379/3") == 3
    assert testenv.redis_db_index("redis://127.0.0.1:6379") == 0


def test_free_tcp_port_can_be_bound() -> None:
    port = testenv.free_tcp_port()
    assert 1024 <= port <= 65535
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


def test_parse_command_strips_separator_and_requires_a_command() -> None:
    assert testenv.parse_command(["--", "pytest", "-n", "2"]) == ["pytest", "-n", "2"]
    assert testenv.parse_command(["pytest", "--", "-k", "x"]) == ["pytest", "--", "-k", "x"]
    with pytest.raises(SystemExit) as exited:
        testenv.parse_command(["--"])
    assert exited.value.code == 2


def test_run_command_forwards_exit_status_and_environment() -> None:
    code = "import os, sys; sys.exit(int(os.environ['TESTENV_PROBE']))"
    assert testenv.run_command([sys.executable, "-c", code], {"TESTENV_PROBE": "7"}) == 7
    killed = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"
    assert testenv.run_command([sys.executable, "-c", killed], {}) == 128 + 15
