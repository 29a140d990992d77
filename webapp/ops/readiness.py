"""`/ready`: whether this pod can serve requests, not whether its shared dependencies are well.

A readiness probe that fails on one pod takes that pod out of the Service; one that fails on every
pod at once (a dependency they all share) empties the Service's endpoints. So the decision rests
only on what can be true of this pod and false of another:

- **Database unreachable: not ready.** Every API route but `/health` and the JWKS reads or writes
  the database; a pod that cannot reach it answers 500s. An outage of the database itself makes
  every pod not ready, and there is nothing better to send the traffic to; a pod with a broken
  connection path (its node, its NetworkPolicy, its credentials) is taken out alone.
- **Schema behind this release (or empty): not ready.** The pod's code needs a migration the
  database has not run yet (the migrate Job has not finished).
- **Schema at this release's head, or ahead of it: ready.** Migrations are expand/contract: a
  schema migrated by a newer release (a revision this pod's scripts do not know, or a descendant of
  its head) still serves this release, which is what a rolling update needs.
- **Redis down: ready.** The API degrades without Redis by design (rate limits count per process,
  the outbox keeps the emails); the body says so and `gatehouse_redis_up` with its alert report it.

`DECISIONS` is that table; tests and docs/deploy.md render it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from alembic.script import ScriptDirectory
from alembic.script.revision import ResolutionError
from sqlalchemy import inspect, text

from webapp.db import DbSession

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"

AT_HEAD, AHEAD, BEHIND, UNKNOWN = "ok", "ahead", "behind", "unknown"


@dataclass(frozen=True)
class Readiness:
    """One answer of `/ready`."""

    database: str  # "ok" or "unavailable: <error class>"
    migrations: str  # AT_HEAD, AHEAD, BEHIND or UNKNOWN (database unreachable)
    redis: str  # "ok", "unavailable" or "not configured"
    revisions: tuple[str, ...] = ()  # the database's alembic revisions, when it answered

    @property
    def ready(self) -> bool:
        return self.database == "ok" and self.migrations in (AT_HEAD, AHEAD)

    @property
    def status(self) -> str:
        if not self.ready:
            return "unavailable"
        return "ok" if self.redis in ("ok", "not configured") else "degraded"

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": self.status,
            "checks": {
                "database": self.database,
                "migrations": self.migrations,
                "redis": self.redis,
            },
        }
        if self.database == "ok":
            body["schema"] = {"database": list(self.revisions), "release": sorted(release_heads())}
        return body


# (database, schema, redis) -> (HTTP status, body status): the whole decision. "any" matches every
# Redis state.
DECISIONS: tuple[tuple[str, str, str, int, str], ...] = (
    ("reachable", "at head", "up", 200, "ok"),
    ("reachable", "at head", "down", 200, "degraded"),
    ("reachable", "ahead (newer release)", "up", 200, "ok"),
    ("reachable", "ahead (newer release)", "down", 200, "degraded"),
    ("reachable", "behind or empty", "any", 503, "unavailable"),
    ("unreachable", "unknown", "any", 503, "unavailable"),
)


@cache
def _script() -> ScriptDirectory:
    """This release's migration scripts (read once: they do not change under a running pod)."""
    return ScriptDirectory(str(MIGRATIONS))


def release_heads() -> set[str]:
    """The head revisions of this release's migration scripts."""
    return set(_script().get_heads())


def schema_state(current: set[str], script: ScriptDirectory | None = None) -> str:
    """AT_HEAD, AHEAD or BEHIND: the database's revisions against this release's scripts."""
    script = script or _script()
    heads = set(script.get_heads())
    if not current:
        return BEHIND  # never migrated
    try:
        reached = {rev.revision for rev in script.iterate_revisions(tuple(current), "base")}
    except ResolutionError:
        # A revision these scripts do not know: a newer release wrote it.
        return AHEAD
    if not heads <= reached:
        return BEHIND
    return AT_HEAD if current == heads else AHEAD


def _database_revisions(session: DbSession) -> set[str]:
    """The revisions in `alembic_version` (none: never migrated). Read with two plain queries, not
    through Alembic's MigrationContext, which logs two INFO lines each time it is built: a probe
    every few seconds per pod would fill the logs with them."""
    if not inspect(session.connection()).has_table("alembic_version"):
        return set()
    return set(session.scalars(text("SELECT version_num FROM alembic_version")))


def check(session: DbSession, redis_state: str) -> Readiness:
    """Readiness of this pod now (`redis_state` is reported, never decisive)."""
    try:
        session.execute(text("SELECT 1"))
        current = _database_revisions(session)
    except Exception as exc:  # noqa: BLE001 - readiness reports, it does not raise
        return Readiness(f"unavailable: {exc.__class__.__name__}", UNKNOWN, redis_state)
    finally:
        session.rollback()
    return Readiness("ok", schema_state(current), redis_state, tuple(sorted(current)))
