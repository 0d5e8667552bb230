"""A durable, ordered outbox for sinks that deliver over the network.

Events are appended to a SQLite file (WAL, ``synchronous=FULL``) before delivery is
tried, removed only once the far end has acknowledged them, and delivered in the
order they were appended. Ids delivered recently are remembered, so an event
re-sent upstream after a restart is not delivered twice. A broker or web service
that is down for hours costs disk space, never events.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.clock import Clock, WallClock
from pipeline.errors import FramechainError
from pipeline.messages import Event, decode, encode
from stages.sinks.sqlite import delete_oldest, open_wal

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    payload  BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS delivered (
    event_id TEXT PRIMARY KEY,
    at       REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS dead (
    event_id TEXT PRIMARY KEY,
    payload  BLOB NOT NULL,
    reason   TEXT NOT NULL
);
"""
REMEMBER_DELIVERED_S = 7 * 24 * 3600


class DiskSpool:
    def __init__(self, path: Path, clock: Clock | None = None) -> None:
        self.clock = clock or WallClock()
        self.path = path
        try:
            self._db = open_wal(path, SCHEMA)
            self._db.execute(
                "DELETE FROM delivered WHERE at < ?",
                (self.clock.now() - REMEMBER_DELIVERED_S,),
            )
        except (sqlite3.Error, OSError) as e:
            raise FramechainError(
                f"cannot open the spool {path}: {e}; check the folder is writable"
            ) from e
        self._length = self._count()

    def _count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def __len__(self) -> int:
        return self._length

    def append(self, events: Sequence[Event]) -> int:
        """Store events not yet spooled or delivered; returns how many were new.

        Raises:
            FramechainError: the spool cannot be written (disk full).
        """
        rows = [(e.event_id, encode(e), e.event_id) for e in events]
        try:
            self._db.execute("BEGIN")
            before = self._db.total_changes
            self._db.executemany(
                "INSERT OR IGNORE INTO outbox (event_id, payload) SELECT ?, ? "
                "WHERE NOT EXISTS (SELECT 1 FROM delivered WHERE event_id = ?)",
                rows,
            )
            added = self._db.total_changes - before
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback()
            raise FramechainError(
                f"cannot spool events to {self.path}: {e}; is the disk full?"
            ) from e
        self._length += added
        return added

    def peek(self, limit: int, after: int = 0) -> list[tuple[int, Event]]:
        """The oldest ``limit`` spooled events past ``after``, oldest first."""
        rows = self._db.execute(
            "SELECT position, payload FROM outbox WHERE position > ? "
            "ORDER BY position LIMIT ?",
            (after, limit),
        ).fetchall()
        events = []
        for position, payload in rows:
            message = decode(payload)
            assert isinstance(message, Event)
            events.append((position, message))
        return events

    def delivered(self, items: Sequence[tuple[int, Event]]) -> None:
        """Acknowledged by the far end: remove, and remember the ids."""
        now = self.clock.now()
        self._move(
            items,
            "INSERT OR IGNORE INTO delivered VALUES (?, ?)",
            [(e.event_id, now) for _, e in items],
        )

    def dead(self, items: Sequence[tuple[int, Event]], reason: str) -> None:
        """Refused for good by the far end: set aside (kept for inspection)."""
        self._move(
            items,
            "INSERT OR IGNORE INTO dead VALUES (?, ?, ?)",
            [(e.event_id, encode(e), reason) for _, e in items],
        )

    def _move(
        self, items: Sequence[tuple[int, Event]], sql: str, rows: list[tuple[Any, ...]]
    ) -> None:
        """Delete ``items`` from the outbox and insert ``rows`` in one transaction."""
        if not items:
            return
        try:
            self._db.execute("BEGIN")
            self._db.executemany(
                "DELETE FROM outbox WHERE position = ?", [(p,) for p, _ in items]
            )
            self._db.executemany(sql, rows)
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback()
            raise FramechainError(
                f"cannot update the spool {self.path}: {e}; is the disk full?"
            ) from e
        self._length = self._count()

    def shrink(self, limit: int) -> int:
        """Bring the file under ``limit`` bytes: first the memory of delivered
        ids and the dead letters, then the oldest undelivered events; returns
        how many undelivered events were dropped."""
        delete_oldest(self._db, self.path, "delivered", "at", limit)
        delete_oldest(self._db, self.path, "dead", "rowid", limit)
        dropped = delete_oldest(self._db, self.path, "outbox", "position", limit)
        self._length = self._count()
        return dropped

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def close(self) -> None:
        self._db.close()
