"""Database foundations: the declarative base, portable column types and the read-only session.

Models use SQLAlchemy 2 typed mappings. Types here keep PostgreSQL (the system of record) and
SQLite (the embedded development default) behaving the same: timestamps are always timezone-aware
UTC, UUIDs are native on PostgreSQL, JSON is JSONB on PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from flask import current_app
from sqlalchemy import JSON, ColumnElement, DateTime, MetaData, TypeDecorator, Uuid, delete, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Session, registry, scoped_session

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """`timestamptz` on PostgreSQL; on SQLite, values come back as aware UTC datetimes too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a timezone-aware column")
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    registry = registry(
        metadata=MetaData(naming_convention=NAMING_CONVENTION),
        type_annotation_map={
            datetime: UTCDateTime(),
            uuid.UUID: Uuid(),
            dict[str, Any]: JSONType,
        },
    )


def utcnow() -> datetime:
    """The one clock of the application (tests move time by patching this function's callers)."""
    return datetime.now(UTC)


def aware(value: datetime) -> datetime:
    """`value` as UTC when it carries no zone (SQLite and RQ hand back naive UTC times)."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def new_id() -> uuid.UUID:
    return uuid.uuid4()


# Services accept Flask-SQLAlchemy's scoped session and a plain Session alike.
DbSession = Session | scoped_session[Any]


@contextmanager
def read_only_session() -> Iterator[DbSession]:
    """A session for read-only queries: on the replica when `DATABASE_REPLICA_URL` is set.
    (Flask-SQLAlchemy's extension of the app in context: this module imports nothing of the
    application, so models and every layer above can use it.)"""
    db = current_app.extensions["sqlalchemy"]
    engine = db.engines.get("replica")
    if engine is None:
        yield db.session
        return
    with Session(engine) as session:
        yield session


def delete_in_batches(
    db: DbSession, model: Any, *where: ColumnElement[bool], batch: int = 1000
) -> int:
    """Delete the rows of `model` matching `where`, `batch` at a time, each batch committed (short
    transactions, no long lock on a busy table); returns how many."""
    deleted = 0
    while True:
        chunk = select(model.id).where(*where).limit(batch)
        result = db.execute(delete(model).where(model.id.in_(chunk)))
        db.commit()
        count = int(getattr(result, "rowcount", 0) or 0)
        deleted += count
        if count < batch:
            return deleted
