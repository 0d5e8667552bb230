"""The embedded default event store: one SQLite file in WAL mode.

Each received batch is one transaction committed with ``synchronous=FULL``; events are
keyed by their stable id, so a redelivered event is stored once.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from pipeline.configtypes import ConfigPath, StrictModel
from pipeline.errors import FramechainError
from pipeline.messages import Event
from stages.sinks.base import EventSink

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id   TEXT PRIMARY KEY,
    stream_id  TEXT NOT NULL,
    rule       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    pts        REAL NOT NULL,
    capture_ts REAL NOT NULL,
    track_id   INTEGER NOT NULL,
    class_id   INTEGER NOT NULL,
    class_name TEXT NOT NULL,
    direction  TEXT NOT NULL,
    value      REAL NOT NULL,
    data       TEXT NOT NULL,
    confidence REAL NOT NULL DEFAULT 0,
    low_confidence INTEGER NOT NULL DEFAULT 0,
    snapshot   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_by_stream ON events (stream_id, rule, seq);
CREATE INDEX IF NOT EXISTS events_by_time ON events (capture_ts);
"""
# Columns added after the first release, for stores created by older versions.
ADDED_COLUMNS = {
    "confidence": "REAL NOT NULL DEFAULT 0",
    "low_confidence": "INTEGER NOT NULL DEFAULT 0",
    "snapshot": "TEXT NOT NULL DEFAULT ''",
}


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
    kind: ClassVar[str] = "sqlite"

    def __init__(self, config: SqliteSinkConfig, streams: Sequence[str]) -> None:
        super().__init__(streams)
        self.config = config
        self._db: sqlite3.Connection | None = None

    def setup(self) -> None:
        path = Path(self.config.path)
        try:
            self._db = open_wal(path, SCHEMA)
            present = {row[1] for row in self._db.execute("PRAGMA table_info(events)")}
            for column, declaration in ADDED_COLUMNS.items():
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
        rows = [
            (
                e.event_id,
                e.stream_id,
                e.rule,
                e.kind,
                e.seq,
                e.pts,
                e.capture_ts,
                e.track_id,
                e.class_id,
                e.class_name,
                e.direction,
                e.value,
                json.dumps(e.data, separators=(",", ":")),
                e.confidence,
                int(e.low_confidence),
                e.snapshot,
            )
            for e in events
        ]
        try:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
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
