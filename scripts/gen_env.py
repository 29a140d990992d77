"""Write the secrets of the docker compose stack into `.env`, once: `python3 scripts/gen_env.py`.

docker-compose.yml ships no secret: it refuses to start (`${VAR:?...}`) until SECRET_KEY,
ENCRYPTION_KEYS, POSTGRES_PASSWORD and GRAFANA_ADMIN_PASSWORD are set, and this script sets the
ones `.env` lacks to fresh random values (from `secrets`, so that production's randomness checks
accept them). Values already in `.env` are kept: a new SECRET_KEY would sign everyone out, a new
encryption key would leave the stored secrets unreadable, and a new database password would not
match the existing database volume. The file is created readable by its owner only, and no value
is printed. Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

GENERATORS: dict[str, Callable[[], str]] = {
    "SECRET_KEY": lambda: secrets.token_urlsafe(48),
    "ENCRYPTION_KEYS": lambda: "local1:" + base64.b64encode(secrets.token_bytes(32)).decode(),
    # URL-safe: it is interpolated into DATABASE_URL.
    "POSTGRES_PASSWORD": lambda: secrets.token_urlsafe(24),
    "GRAFANA_ADMIN_PASSWORD": lambda: secrets.token_urlsafe(18),
}


def present(lines: list[str]) -> set[str]:
    """Variables that `lines` (a .env file) already set to a non-empty value."""
    names = set()
    for line in lines:
        name, sep, value = line.partition("=")
        if sep and not name.lstrip().startswith("#") and value.strip():
            names.add(name.strip().removeprefix("export ").strip())
    return names


def fill(path: Path) -> list[str]:
    """Add the missing secrets to the .env file at `path`; returns the names written."""
    lines = path.read_text().splitlines() if path.exists() else []
    have = present(lines)
    missing = [name for name in GENERATORS if name not in have]
    if not missing:
        return []
    # Drop empty assignments (as in .env.example) that the new values replace.
    kept = [line for line in lines if line.partition("=")[0].strip() not in missing]
    kept += [f"{name}={GENERATORS[name]()}" for name in missing]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(kept) + "\n")
    os.chmod(path, 0o600)
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", type=Path, default=ROOT / ".env", help="default: ./.env")
    args = parser.parse_args(argv)
    written = fill(args.env_file)
    if written:
        print(f"{args.env_file}: generated {', '.join(written)}")
    else:
        print(f"{args.env_file}: every secret is already set; nothing changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
