"""Reading the SQLite event store back: ``framechain events``, ``framechain
report`` and the HTTP API share this query layer.

The store is opened read-only (``mode=ro``), so querying a running system never
blocks or alters the sink writing to it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.errors import FramechainError
from pipeline.eventschema import sql_columns

COLUMNS = tuple(sql_columns())
"""The stored event's columns, in order (from ``Event``)."""
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Query:
    """Which events: each filter a set of accepted values (empty: any), capture
    time in [since, until). ``newest_first`` with ``before`` pages backwards
    from a (capture time, event id) cursor, exclusive."""

    ids: Sequence[str] = ()
    cameras: Sequence[str] = ()
    rules: Sequence[str] = ()
    kinds: Sequence[str] = ()
    classes: Sequence[str] = ()
    tracks: Sequence[int] = ()
    since: float | None = None
    until: float | None = None
    limit: int | None = None
    newest_first: bool = False
    before: tuple[float, str] | None = None


def _where(q: Query) -> tuple[str, list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    for column, values in (
        ("event_id", q.ids),
        ("stream_id", q.cameras),
        ("rule", q.rules),
        ("kind", q.kinds),
        ("class_name", q.classes),
        ("track_id", q.tracks),
    ):
        if values:
            where.append(f"{column} IN ({','.join('?' * len(values))})")
            params.extend(values)
    if q.since is not None:
        where.append("capture_ts >= ?")
        params.append(q.since)
    if q.until is not None:
        where.append("capture_ts < ?")
        params.append(q.until)
    if q.before is not None:
        # a range on capture_ts the index can seek to, ties broken by id
        where.append("capture_ts <= ? AND (capture_ts < ? OR event_id < ?)")
        params.extend((q.before[0], q.before[0], q.before[1]))
    return (" WHERE " + " AND ".join(where)) if where else "", params


def _read(path: Path, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
    """Rows of a read-only query; no store yet (the chain has not started its
    sink): no rows.

    Raises:
        FramechainError: the file is not an event store, or unreadable.
    """
    if not path.exists():
        return []
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        ) as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute(sql, params)]
    except sqlite3.Error as e:
        raise FramechainError(f"cannot read the event store {path}: {e}") from e


def store_config(config: Any) -> Any:
    """The first sqlite sink of a config: the store the services beside the
    chain read (None without one)."""
    return next((s for s in config.sinks if s.kind == "sqlite"), None)


def after(path: Path, rowid: int, limit: int = 500) -> list[dict[str, Any]]:
    """The events stored after row ``rowid``, oldest first, with their ``row``:
    how a service beside the chain follows the store."""
    return _read(
        path,
        "SELECT rowid AS row, event_id, stream_id, kind, track_id, capture_ts, pts "
        "FROM events WHERE rowid > ? ORDER BY rowid LIMIT ?",
        (rowid, limit),
    )


def stored_after(
    path: Path, rowid: int, limit: int = 500
) -> list[tuple[int, dict[str, Any]]]:
    """(row, event) of the events stored after row ``rowid``, in the order they
    were stored: how the API's event stream follows the store."""
    rows = _read(
        path,
        "SELECT rowid AS _row, * FROM events WHERE rowid > ? ORDER BY rowid LIMIT ?",
        (rowid, limit),
    )
    return [(int(row.pop("_row")), _event(row)) for row in rows]


def last_row(path: Path, before: float | None = None) -> int:
    """The newest row of the store, or of its events captured ``before`` a
    time (0 when there is none, or no store yet)."""
    if before is None:
        rows = _read(path, "SELECT max(rowid) AS row FROM events", ())
    else:
        rows = _read(
            path,
            "SELECT max(rowid) AS row FROM events WHERE capture_ts < ?",
            (before,),
        )
    return int(rows[0]["row"] or 0) if rows else 0


def parse_time(text: str, now: float | None = None) -> float:
    """``2026-11-23T08:00``, ``2026-11-23 08:00:00`` (local time), a Unix time, or a
    duration back from now: ``90s``, ``15m``, ``2h``, ``7d``.

    Raises:
        FramechainError: none of those.
    """
    text = text.strip()
    match = _RELATIVE.match(text)
    if match:
        return (now or time.time()) - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except (ValueError, OverflowError, OSError):
        raise FramechainError(
            f"cannot read the time {text!r}; give an ISO date-time "
            "(2026-11-23T08:00), a Unix time or a duration back from now (15m, 2h)"
        ) from None


def query(path: Path, q: Query) -> list[dict[str, Any]]:
    """Events matching ``q``, oldest first (by capture time), or newest first."""
    where, params = _where(q)
    order = "DESC" if q.newest_first else ""
    sql = (
        f"SELECT * FROM events{where} ORDER BY capture_ts {order}, "  # noqa: S608
        f"event_id {order}"
    )
    if q.limit:
        sql += f" LIMIT {int(q.limit)}"
    return [_event(row) for row in _read(path, sql, params)]


def _event(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as the event it holds: data decoded, flags true/false."""
    row["data"] = json.loads(row["data"]) if row.get("data") else {}
    row["low_confidence"] = bool(row.get("low_confidence", 0))
    return row


def counts(
    path: Path, q: Query, bucket_s: int, directional: Sequence[str]
) -> list[dict[str, Any]]:
    """How many events, per time bucket of ``bucket_s`` (aligned to the epoch),
    camera, rule, kind, class and direction (for the ``directional`` kinds, ''
    for the others), oldest bucket first."""
    where, params = _where(q)
    marks = ",".join("?" * len(directional)) or "NULL"
    sql = (
        "SELECT CAST(capture_ts / ? AS INTEGER) * ? AS start, stream_id AS camera, "  # noqa: S608
        f"rule, kind, class_name, CASE WHEN kind IN ({marks}) THEN direction "
        f"ELSE '' END AS direction, COUNT(*) AS count FROM events{where} "
        "GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6"
    )
    return _read(path, sql, [bucket_s, bucket_s, *directional, *params])


def _csv_value(value: Any) -> Any:
    return ("true" if value else "false") if isinstance(value, bool) else value


def unknown_filter(path: Path, q: Query) -> str | None:
    """Why a query found nothing, when it names a camera, rule or kind the store
    has never held: one line listing the ones it has (None otherwise)."""
    for column, what, wanted in (
        ("stream_id", "camera", q.cameras),
        ("rule", "rule", q.rules),
        ("kind", "kind", q.kinds),
    ):
        if not wanted:
            continue
        held = [
            row["value"]
            for row in _read(
                path,
                f"SELECT DISTINCT {column} AS value FROM events ORDER BY 1",  # noqa: S608
                (),
            )
        ]
        missing = [w for w in wanted if w not in held]
        if missing:
            names = ", ".join(map(repr, missing))
            return f"no {what} {names} in {path}; it holds: {', '.join(held) or 'none'}"
    return None


def local_time(ts: float) -> str:
    return datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="milliseconds")


def render(rows: list[dict[str, Any]], fmt: str) -> str:
    """``table`` (for people), ``json`` (JSON Lines: one event a line, as the
    jsonl sink writes them) or ``csv`` (every column; flags as true/false,
    ``data`` as JSON)."""
    if fmt == "json":
        return "".join(json.dumps(row) + "\n" for row in rows)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    **{k: _csv_value(v) for k, v in row.items()},
                    "data": json.dumps(row["data"]),
                }
            )
        return out.getvalue()
    header = ("time", "camera", "rule", "kind", "track", "class", "dir", "value")
    table = [header] + [
        (
            local_time(r["capture_ts"]),
            r["stream_id"],
            r["rule"],
            r["kind"],
            "" if r["track_id"] < 0 else str(r["track_id"]),
            r["class_name"],
            r["direction"],
            f"{r['value']:g}",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in table
    ]
    lines.append(f"{len(rows)} events")
    return "\n".join(line.rstrip() for line in lines) + "\n"
