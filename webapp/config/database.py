"""The database URL as SQLAlchemy takes it."""

from __future__ import annotations


def sqlalchemy_url(url: str) -> str:
    """Accept the plain `postgresql://` form platforms hand out and use psycopg 3 underneath."""
    for prefix in ("postgresql+psycopg2://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url
