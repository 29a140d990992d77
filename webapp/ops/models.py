"""The record of successful database backups.

`scripts/backup.sh` inserts one row (with psql, not through the application) after each archive
it has written and verified; the API's `/metrics` reads the newest at scrape time
(`gatehouse_backup_last_success_timestamp_seconds`, alert `GatehouseBackupStale`). The table lives
in the database it describes, so it is in every later dump and a restored database keeps its
history: the rows say which archives existed, never where they are now.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Text
from sqlalchemy.orm import Mapped, mapped_column

from webapp.db import Base


class BackupRun(Base):
    __tablename__ = "backup_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    # started_at is the moment the dump's snapshot was taken (what a restore gives back),
    # finished_at the moment the verified archive existed (what the freshness metric reports).
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    archive: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
