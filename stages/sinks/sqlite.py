"""The embedded default event store: one SQLite file in WAL mode.

Each received batch is one transaction committed with ``synchronous=FULL``; events are
keyed by their stable id, so a redelivered event is stored once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field

from pipeline.configtypes import ConfigPath, StrictModel
from pipeline.errors import FramechainError
from pipeline.eventschema import sql_columns, sql_insert, sql_row, sqlite_schema
from pipeline.messages import Event
from stages.sinks.base import EventSink


def open_wal(path: Path, schema: str) -> sqlite3.Connection:
    """A durable SQLite file (WAL, every commit synced), created with ``schema``.

    Raises:
        sqlite3.Error, OSError: cannot create or open it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(schema)
    return db


class SqliteSinkConfig(StrictModel):
    kind: Literal["sqlite"] = Field(description="SQLite event store (WAL).")
    name: str = Field(
        default="sqlite",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Sink name, unique among sinks.",
    )

    def target(self) -> str:
        """Where events go, for the run summary."""
        return self.path

    path: ConfigPath = Field(description="Database file; created if missing.")


class SqliteSink(EventSink):
    def __init__(self, config: SqliteSinkConfig, streams: Sequence[str]) -> None:
        super().__init__(streams)
        self.config = config
        self._db: sqlite3.Connection | None = None
        self._insert = sql_insert()

    def setup(self) -> None:
        path = Path(self.config.path)
        try:
            self._db = open_wal(path, sqlite_schema())
            present = {row[1] for row in self._db.execute("PRAGMA table_info(events)")}
            # a store made by an older version gains the columns added since
            for column, declaration in sql_columns().items():
                if column not in present:
                    self._db.execute(
                        f"ALTER TABLE events ADD COLUMN {column} {declaration}"
                    )
        except (sqlite3.Error, OSError) as e:
            raise FramechainError(
                f"cannot open event store {path}: {e}; check the directory is writable"
            ) from e

    def write(self, events: Sequence[Event]) -> None:
        assert self._db is not None
        rows = [sql_row(e) for e in events]
        try:
            self._db.execute("BEGIN")
            self._db.executemany(
                self._insert,
                rows,
            )
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise FramechainError(
                f"cannot write events to {self.config.path}: {e}; is the disk full?"
            ) from e

    def flush(self) -> None:
        """Every write commits its own transaction; nothing is buffered."""

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
