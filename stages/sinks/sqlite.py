"""The embedded default event store: one SQLite file in WAL mode.

Each received batch is one transaction committed with ``synchronous=FULL``; events are
keyed by their stable id, so a redelivered event is stored once.

``retention`` prunes the oldest events while the run goes on. A full disk does not
crash the sink: the batch that did not fit is held in memory and written again at
every tick, and the sink answers no mark meanwhile, so the track keeps every event
that is not stored (in its outbox and checkpoint) and nothing is lost.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from pipeline.configtypes import ConfigPath, StrictModel
from pipeline.errors import FramechainError
from pipeline.eventkinds import EventKindSpec
from pipeline.eventschema import (
    sql_columns,
    sql_insert,
    sql_row,
    sqlite_schema,
    sqlite_views,
)
from pipeline.messages import Event
from pipeline.retention import Pacer, Pruned, RetentionConfig
from stages.sinks.base import EventSink
from stages.sinks.stats import SqliteSinkStats

log = logging.getLogger(__name__)


def open_wal(path: Path, schema: str) -> sqlite3.Connection:
    """A durable SQLite file (WAL, every commit synced), created with ``schema``;
    a new file frees the pages of deleted rows on ``PRAGMA incremental_vacuum``.

    Raises:
        sqlite3.Error, OSError: cannot create or open it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # no effect on an existing file
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(schema)
    return db


def store_bytes(path: Path) -> int:
    """Bytes a WAL store takes on disk: its file and its write-ahead log."""
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def make_shrinkable(db: sqlite3.Connection) -> None:
    """A store made before ``open_wal`` set incremental vacuum is rebuilt once
    with it: without it, deleted rows never shrink the file."""
    if int(db.execute("PRAGMA auto_vacuum").fetchone()[0]) != 2:  # incremental
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("VACUUM")


def delete_oldest(
    db: sqlite3.Connection, path: Path, table: str, order: str, limit: int
) -> int:
    """Delete the first rows of ``table`` by ``order`` (oldest first) until the
    store at ``path`` is under ``limit`` bytes; returns how many went. Each step
    takes the share of the rows the size is over by (plus 10 %), frees their
    pages (``open_wal`` stores vacuum incrementally) and folds the log back."""
    make_shrinkable(db)
    deleted = 0
    while (size := store_bytes(path)) > limit:
        rows = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
        if not rows:
            break
        count = max(16, int(rows * min(1.0, 1 - limit / size + 0.1)))
        deleted += db.execute(
            f"DELETE FROM {table} WHERE rowid IN "  # noqa: S608
            f"(SELECT rowid FROM {table} ORDER BY {order} LIMIT ?)",
            (count,),
        ).rowcount
        # it frees one page per step: execute() steps once (and fetching rows
        # does not step it further); a script runs it to the end (measured)
        db.executescript("PRAGMA incremental_vacuum;")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return deleted


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
    retention: RetentionConfig = Field(
        default_factory=RetentionConfig,
        description="Oldest events deleted by age or store size (file and WAL).",
    )


# events held in memory while the disk is full; beyond this the sink gives up
# (and the track re-sends them to its next process)
MAX_HELD = 100_000


def _disk_full(error: sqlite3.Error) -> bool:
    return getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or (
        "full" in str(error)
    )


class SqliteSink(EventSink):
    def __init__(
        self,
        config: SqliteSinkConfig,
        streams: Sequence[str],
        kinds: Sequence[EventKindSpec] = (),
    ) -> None:
        """``kinds``: the registered event kinds, one view of the store each."""
        super().__init__(streams)
        self.config = config
        self.kinds = tuple(kinds)
        self._db: sqlite3.Connection | None = None
        self._insert = sql_insert()
        self._held: list[tuple[Any, ...]] = []  # rows the disk had no room for
        self._full_since: float | None = None
        self._pacer = Pacer()
        self.pruned = Pruned()

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
            self._db.executescript(sqlite_views(self.kinds))
            limits = self.config.retention
            if limits.max_bytes is not None:
                make_shrinkable(self._db)  # now, not at the first prune
        except (sqlite3.Error, OSError) as e:
            raise FramechainError(
                f"cannot open event store {path}: {e}; check the directory is writable"
            ) from e

    def write(self, events: Sequence[Event]) -> None:
        self._held += [sql_row(e) for e in events]
        self._store()

    def _store(self) -> None:
        """Commit the rows held; a full disk keeps them held (one log line)."""
        assert self._db is not None
        if not self._held:
            return
        try:
            self._db.execute("BEGIN")
            self._db.executemany(self._insert, self._held)
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            if not _disk_full(e) or len(self._held) > MAX_HELD:
                raise FramechainError(
                    f"cannot write events to {self.config.path}: {e}; free space "
                    "or set retention.max_size_mb"
                ) from e
            if self._full_since is None:
                self._full_since = time.monotonic()
                log.error(
                    "event store %s: the disk is full; %d events held until there "
                    "is room (set retention.max_size_mb, or free space)",
                    self.config.path,
                    len(self._held),
                )
            return
        if self._full_since is not None:
            log.info(
                "event store %s: written again after the disk was full",
                self.config.path,
            )
            self._full_since = None
        self._held = []

    def holding(self) -> bool:
        return bool(self._held)

    def flush(self) -> None:
        """Every write commits its own transaction; what a full disk held back
        is tried again here, and retention is applied."""
        self._store()
        limit = self.config.retention.max_bytes
        wal = Path(f"{self.config.path}-wal")
        if limit is not None and wal.exists() and wal.stat().st_size > limit // 4:
            # the log grows by whole pages per commit: folded back before it
            # alone could pass the limit between two prunes
            with contextlib.suppress(sqlite3.Error):
                assert self._db is not None
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if self._pacer.due() and self._db is not None:
            try:
                self._prune(self._db)
            except sqlite3.Error as e:  # a full disk can fail a delete's journal
                log.warning("event store %s: pruning failed: %s", self.config.path, e)

    def _prune(self, db: sqlite3.Connection) -> None:
        limits = self.config.retention
        if limits.max_age_s is not None:
            cursor = db.execute(
                "DELETE FROM events WHERE capture_ts < ?",
                (time.time() - limits.max_age_s,),
            )
            self.pruned.entries += cursor.rowcount
        if limits.max_bytes is not None:
            path = Path(self.config.path)
            self.pruned.entries += delete_oldest(
                db, path, "events", "rowid", limits.max_bytes
            )

    def stats(self) -> SqliteSinkStats:
        full = self._full_since is not None
        return SqliteSinkStats(
            events=self.received,
            undecodable=self.undecodable,
            pruned_events=self.pruned.entries,
            held=len(self._held),
            problem=f"disk full: {len(self._held)} events held in memory"
            if full
            else "",
        )

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
