"""The throwaway target that the benchmark (`bench.http`) and the load runner (`tests.load`)
serve: a fresh PostgreSQL database, a flushed Redis database, new signing and encryption keys,
the app's production environment, migrations and an administrator — all removed afterwards."""

from __future__ import annotations

import base64
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]

# Variables of the caller's environment that would change what is served (or clash with the keys
# made here); everything else passes through to the servers.
STRIPPED_ENV = (
    "JWT_KEYS",
    "DATABASE_REPLICA_URL",
    "API_KEY_PEPPER",
    "BIND",
    "PORT",
    "FLASK_APP",
    "FLASK_DEBUG",
)


class SetupError(Exception):
    """The run could not be prepared; the message says what and why, in one line."""


def step(message: str) -> None:
    print(f"· {message}", flush=True)


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def with_redis_db(url: str, db: int) -> str:
    """`url` with Redis database number `db` (a TCP or a unix-socket URL)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = [p for p in parts.query.split("&") if p and not p.startswith("db=")]
        return urlunsplit(parts._replace(query="&".join([*query, f"db={db}"])))
    return urlunsplit(parts._replace(path=f"/{db}"))


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def bin_script(name: str) -> str:
    """The console script `name` of the running interpreter's environment (e.g. .venv/bin/...)."""
    candidate = Path(sys.executable).parent / name  # not resolved: a venv's python is a symlink
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise SetupError(f"{name} is not installed in {Path(sys.executable).parent} (make install)")
    return found


def die_with_parent() -> None:
    """In a child before exec: SIGTERM it if the runner itself dies (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_gunicorn(
    app: str,
    env: dict[str, str],
    log_path: Path,
    child_setup: Callable[[], None] = die_with_parent,
) -> subprocess.Popen[bytes]:
    """`gunicorn -c gunicorn.conf.py APP` from the project root, in a session (and so a process
    group) of its own, its output in `log_path`; `child_setup` runs in it before exec."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [bin_script("gunicorn"), "-c", "gunicorn.conf.py", app],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=child_setup,
        )


class ThrowawayTarget:
    """Prepare with `prepare(overrides)`, then serve with `env`; `cleanup()` removes it all."""

    def __init__(self, admin_url: str, db_name: str, redis_url: str, *, prefix: str) -> None:
        self.admin_url = admin_url
        self.db_name = db_name
        self.redis_url = redis_url
        self.database_url = with_database(admin_url, db_name)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"gatehouse-{prefix}-"))
        self.env: dict[str, str] = {}
        self._db_created = False
        self._redis_used = False

    def prepare(self, overrides: dict[str, str]) -> None:
        """Database, Redis, keys and the environment (production, rate limits off), migrated."""
        self._database()
        self._redis()
        from webapp.security.keys import write_new_keyfile

        keys = self.workdir / "jwt-keys.json"
        write_new_keyfile(keys)
        metrics_dir = self.workdir / "metrics"
        metrics_dir.mkdir()
        env = {k: v for k, v in os.environ.items() if k not in STRIPPED_ENV}
        env.update(
            GATEHOUSE_ENV="production",
            SECRET_KEY=secrets.token_urlsafe(48),
            ENCRYPTION_KEYS="run:" + base64.b64encode(secrets.token_bytes(32)).decode(),
            JWT_KEYS_FILE=str(keys),
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis_url,
            # Capacity, not abuse protection, is measured; production refuses limits off
            # without this explicit opt-out (and logs a warning at every start).
            RATELIMIT_ENABLED="false",
            UNSAFE_PRODUCTION_WITHOUT_RATELIMIT="true",
            PUBLIC_BASE_URL="https://gatehouse.invalid",  # production requires https://
            LOG_LEVEL="WARNING",
            # Our own: two gunicorns on one host must not share (and empty) one directory.
            PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
            # Shutdown only: the load has finished before a server is stopped.
            GUNICORN_GRACEFUL_TIMEOUT="5",
            PYTHONDONTWRITEBYTECODE="1",
        )
        env.update(overrides)
        self.env = env
        step(f"migrating {self.db_name} (flask --app wsgi db upgrade)")
        self.flask("db", "upgrade")

    def create_admin(self, email: str, password: str, name: str = "Administrator") -> None:
        step(f"creating the administrator {email} (flask --app wsgi users create-admin)")
        self.flask(
            "users",
            "create-admin",
            "--email",
            email,
            "--name",
            name,
            extra_env={"GATEHOUSE_ADMIN_PASSWORD": password},
        )

    def flask(self, *args: str, extra_env: dict[str, str] | None = None) -> None:
        done = subprocess.run(
            [bin_script("flask"), "--app", "wsgi", *args],
            cwd=ROOT,
            env={**self.env, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines() or [f"exit {done.returncode}"]
            raise SetupError(f"`flask --app wsgi {' '.join(args[:2])}` failed: {lines[-1]}")

    def _database(self) -> None:
        import psycopg
        from psycopg import sql

        step(f"creating database {self.db_name} (via {redact(self.admin_url)})")
        try:
            with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
                name = sql.Identifier(self.db_name)
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
                conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
        except psycopg.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise SetupError(f"PostgreSQL at {redact(self.admin_url)}: {first}") from None
        self._db_created = True

    def _redis(self) -> None:
        import redis

        step(f"flushing Redis {redact(self.redis_url)}")
        try:
            redis.Redis.from_url(self.redis_url, socket_connect_timeout=2).flushdb()
        except redis.RedisError as exc:
            raise SetupError(f"Redis at {redact(self.redis_url)}: {exc}") from None
        self._redis_used = True

    def cleanup(self) -> None:
        if self._db_created:
            with contextlib.suppress(Exception):
                import psycopg
                from psycopg import sql

                with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
                    name = sql.Identifier(self.db_name)
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
            self._db_created = False
        if self._redis_used:
            with contextlib.suppress(Exception):
                import redis

                redis.Redis.from_url(self.redis_url, socket_connect_timeout=2).flushdb()
            self._redis_used = False
        shutil.rmtree(self.workdir, ignore_errors=True)
