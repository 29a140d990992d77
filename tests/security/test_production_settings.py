"""Production refuses weak settings.

`GATEHOUSE_ENV=production` with `SECRET_KEY='A'*32`, an all-zero AES key, `CORS_ORIGINS=*`, an
`http://` `PUBLIC_BASE_URL`, `REFRESH_REUSE_GRACE=86400` or rate limiting off stops with one line
naming the variable (never its value), and the compose file ships no secret.

OWASP ASVS 4.0.3: V2.10.4 and V6.4.1 (secrets are not in the repository: compose requires them from
the operator, a generator makes them random), V6.2.1 (keys that are evidently not random, such as
an all-zero AES key, stop the start), V9.1.1 (links that carry tokens are https), V14.5.3 (CORS is a
strict allow-list: no wildcard, pattern or `null` origin), V2.2.1 and V11.1.4 (anti-automation
cannot be turned off in production without an opt-out named for its risk).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
import yaml
from flask import Flask

from tests.support.throwaway import start_gunicorn
from tests.support.waiting import free_port, wait_until
from webapp.config import ConfigError, Settings
from webapp.security.entropy import key_weakness, secret_weakness
from webapp.security.keys import generate_jwk

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_SECRETS = ("SECRET_KEY", "ENCRYPTION_KEYS", "POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD")


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def fixed_random(size: int, seed: int) -> bytes:
    """Random-looking bytes that are the same in every process: parametrized test ids must match
    across pytest-xdist workers (the sampling test below draws real randomness)."""
    return random.Random(seed).randbytes(size)


def production_env() -> dict[str, str]:
    """A complete, valid production environment; each attack spoils one variable."""
    return {
        "GATEHOUSE_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "DATABASE_URL": "postgresql://gatehouse@db.internal:5432/gatehouse",
        "REDIS_URL": "redis://cache.internal:6379/0",
        "JWT_KEYS": json.dumps({"keys": [generate_jwk("EdDSA")]}),
        "ENCRYPTION_KEYS": "k1:" + b64(os.urandom(32)),
        "PUBLIC_BASE_URL": "https://id.example",
    }


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name in list(os.environ):
        if name not in ("PATH", "HOME") and not name.startswith(("TEST_", "PYTEST")):
            monkeypatch.delenv(name)
    values = production_env()
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


# (variable, weak value): every one was accepted by production before the fix.
ATTACKS = [
    ("SECRET_KEY", "A" * 32),
    ("SECRET_KEY", "abc" * 11),
    ("SECRET_KEY", "0123456789" * 4),
    ("SECRET_KEY", "test-secret-" + "x" * 32),
    ("SECRET_KEY", "compose-local-only-not-a-real-secret-0123456789"),  # once shipped in compose
    ("API_KEY_PEPPER", "p" * 40),
    ("ENCRYPTION_KEYS", "k1:" + b64(bytes(32))),  # all-zero AES key
    ("ENCRYPTION_KEYS", "k1:" + b64(b"A" * 32)),
    ("ENCRYPTION_KEYS", "k1:" + b64(b"compose-local-only-NOT-A-SECRET!")),  # a passphrase
    ("ENCRYPTION_KEYS", "new:" + b64(fixed_random(32, 1)) + ",old:" + b64(b"\x01\x02" * 16)),
    ("CORS_ORIGINS", "*"),
    ("CORS_ORIGINS", "https://app.example,*"),
    ("CORS_ORIGINS", "https://.*\\.example\\.com"),  # a pattern, not an origin
    ("CORS_ORIGINS", "null"),
    ("CORS_ORIGINS", "http://app.example"),
    ("PUBLIC_BASE_URL", "http://id.example"),
    ("PUBLIC_BASE_URL", "id.example"),
    ("REFRESH_REUSE_GRACE", "86400"),
    ("REFRESH_REUSE_GRACE", "61"),
    ("RATELIMIT_ENABLED", "false"),
    ("WEBHOOK_ALLOW_PRIVATE", "true"),  # the SSRF guard off
    ("PACT_PROVIDER_STATES", "true"),  # a hook that creates accounts and hands out tokens
]


@pytest.mark.parametrize(("name", "value"), ATTACKS)
def test_production_refuses_a_weak_setting_naming_the_variable_not_the_value(
    production: dict[str, str], monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name) as caught:
        Settings.from_env()
    if name in ("SECRET_KEY", "API_KEY_PEPPER", "ENCRYPTION_KEYS"):
        for part in re.split(r"[,:]", value):
            assert len(part) < 8 or part not in str(caught.value)


@pytest.mark.parametrize(("name", "value"), ATTACKS)
def test_development_keeps_accepting_the_same_values(
    production: dict[str, str], monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """The rules are production's: `make run` and the tests keep their conveniences."""
    monkeypatch.setenv("GATEHOUSE_ENV", "development")
    monkeypatch.setenv(name, value)
    assert Settings.from_env().env == "development"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REFRESH_REUSE_GRACE", "60"),
        ("CORS_ORIGINS", "https://app.example,https://admin.example:8443"),
        ("API_KEY_PEPPER", base64.urlsafe_b64encode(fixed_random(32, 2)).decode()),
        ("ENCRYPTION_KEYS", "new:" + b64(fixed_random(32, 3)) + ",old:" + b64(fixed_random(32, 4))),
    ],
)
def test_production_accepts_strong_values(
    production: dict[str, str], monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    assert Settings.from_env().is_production


def test_rate_limits_off_in_production_need_the_explicitly_unsafe_opt_out(
    production: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RATELIMIT_ENABLED", "false")
    with pytest.raises(ConfigError, match="UNSAFE_PRODUCTION_WITHOUT_RATELIMIT"):
        Settings.from_env()
    monkeypatch.setenv("UNSAFE_PRODUCTION_WITHOUT_RATELIMIT", "true")
    settings = Settings.from_env()
    assert settings.is_production
    assert settings.ratelimit_enabled is False


def test_random_values_are_never_refused() -> None:
    """The other side of the rule: what `secrets`/`os.urandom` make always passes."""
    generators = {
        "token_urlsafe(32)": lambda: secrets.token_urlsafe(32).encode(),
        "token_hex(32)": lambda: secrets.token_hex(32).encode(),
        "token_hex(16)": lambda: secrets.token_hex(16).encode(),
        "os.urandom(32)": lambda: os.urandom(32),
    }
    for name, generate in generators.items():
        for _ in range(20_000):
            value = generate()
            assert secret_weakness(value) is None, (name, value)
    for _ in range(20_000):
        key = os.urandom(32)
        assert key_weakness(key) is None, key


def _start(variables: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import wsgi"],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), **variables},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SECRET_KEY", "A" * 32),
        ("ENCRYPTION_KEYS", "k1:" + b64(bytes(32))),
        ("CORS_ORIGINS", "*"),
        ("PUBLIC_BASE_URL", "http://id.example"),
        ("REFRESH_REUSE_GRACE", "86400"),
        ("RATELIMIT_ENABLED", "false"),
    ],
)
def test_the_process_stops_with_one_line_naming_the_variable(name: str, value: str) -> None:
    result = _start({**production_env(), name: value})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert name in lines[0]
    assert "Traceback" not in result.stderr
    if name in ("SECRET_KEY", "ENCRYPTION_KEYS"):
        assert value.removeprefix("k1:") not in result.stderr


def test_compose_ships_no_secret_and_requires_every_one() -> None:
    text = COMPOSE.read_text()
    for name in COMPOSE_SECRETS:
        uses = re.findall(r"\$\{" + name + r"([^}]*)\}", text)
        assert uses, f"{name} is not taken from the environment"
        for rest in uses:
            assert rest.startswith(":?"), f"${{{name}{rest}}}: a default is a published secret"
    # The values compose used to ship stay refused, and no literal secret remains.
    assert "compose-local-only" not in text
    assert "Y29tcG9zZS1sb2NhbC1vbmx5" not in text
    services = yaml.safe_load(text)["services"]
    for service in services.values():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"SECRET|PASSWORD|KEYS$|PEPPER|TOKEN", key):
                assert re.fullmatch(r"\$\{\w+:\?[^}]*\}", str(value)), (key, value)


def test_the_generated_env_file_satisfies_production(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text((ROOT / ".env.example").read_text())
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_env.py"), "--env-file", str(env_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    values = dict(
        line.split("=", 1) for line in env_file.read_text().splitlines() if re.match(r"\w+=", line)
    )
    assert set(COMPOSE_SECRETS) <= set(values)
    for name in COMPOSE_SECRETS:
        assert values[name], name
        assert values[name] not in done.stdout  # names only, never values
    settings = Settings(
        env="production",
        secret_key=values["SECRET_KEY"],
        encryption_keys=values["ENCRYPTION_KEYS"],
        database_url=f"postgresql://gatehouse:{values['POSTGRES_PASSWORD']}@postgres/gatehouse",
        redis_url="redis://redis:6379/0",
        jwt_keys_file="/var/lib/gatehouse/jwt-keys.json",
        public_base_url="https://localhost",
    )
    settings.validate()
    # A second run keeps every value: a new key would make the stored secrets unreadable.
    before = env_file.read_text()
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_env.py"), "--env-file", str(env_file)],
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert env_file.read_text() == before


# --- /metrics off the public port ("Also" of the finding; ASVS V1.14.1, V14.3) -----------------


@pytest.fixture
def production_gunicorn(
    app: Flask, database_url: str, redis_url: str, tmp_path: Path
) -> Iterator[tuple[str, str]]:
    """The production command with METRICS_PORT set, on the migrated test database: (API base
    URL, metrics base URL)."""
    api_port, metrics_port = free_port(), free_port()
    (tmp_path / "metrics").mkdir()
    env = {
        "PATH": os.environ.get("PATH", ""),
        **production_env(),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "BIND": f"127.0.0.1:{api_port}",
        "METRICS_PORT": str(metrics_port),
        "METRICS_ADDR": "127.0.0.1",
        "WEB_CONCURRENCY": "1",
        "GUNICORN_GRACEFUL_TIMEOUT": "2",
        "LOG_LEVEL": "WARNING",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    log = tmp_path / "gunicorn.log"
    proc = start_gunicorn("wsgi:app", env, log)
    api, metrics = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{metrics_port}"
    try:

        def healthy() -> bool:
            assert proc.poll() is None, log.read_text()
            with contextlib.suppress(requests.RequestException):
                return requests.get(f"{api}/health", timeout=10).ok
            return False

        wait_until(healthy, timeout=60, interval=0.2, message=log.read_text)
        yield api, metrics
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_metrics_are_not_served_on_the_api_port_in_production(
    production_gunicorn: tuple[str, str],
) -> None:
    api, metrics = production_gunicorn
    assert requests.get(f"{api}/api/openapi.json", timeout=15).ok  # the API port works
    public = requests.get(f"{api}/metrics", timeout=15)
    assert public.status_code == 404
    assert "gatehouse_" not in public.text
    # The listener is told by the connection's own socket, not by a header a client could forge.
    port = metrics.rsplit(":", 1)[1]
    forged = requests.get(f"{api}/metrics", headers={"Host": f"127.0.0.1:{port}"}, timeout=15)
    assert forged.status_code == 404
    scraped = requests.get(f"{metrics}/metrics", timeout=15)
    assert scraped.status_code == 200
    assert "gatehouse_build_info" in scraped.text


def test_the_metrics_port_is_not_a_second_way_into_the_api(
    production_gunicorn: tuple[str, str],
) -> None:
    _, metrics = production_gunicorn
    for path in ("/api/openapi.json", "/api/v1/users/me", "/health", "/metrics/"):
        assert requests.get(f"{metrics}{path}", timeout=15).status_code == 404, path


def test_the_api_port_answers_metrics_only_outside_production_without_a_metrics_port(
    make_app: Callable[..., Flask],
) -> None:
    assert make_app().test_client().get("/metrics").status_code == 200  # `make run`, tests
    production = make_app(env="production", ratelimit_enabled=True)
    assert production.test_client().get("/metrics").status_code == 404
    assert make_app(metrics_port=9100).test_client().get("/metrics").status_code == 404
