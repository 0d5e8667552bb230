"""Reading the SQLite event store back: ``framechain events`` and ``framechain report``.

The store is opened read-only (``mode=ro``), so querying a running system never
blocks or alters the sink writing to it.
"""

from __future__ import annotations

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
    cameras: Sequence[str] = ()
    rules: Sequence[str] = ()
    kinds: Sequence[str] = ()
    since: float | None = None
    until: float | None = None
    limit: int | None = None


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
    except ValueError:
        raise FramechainError(
            f"cannot read the time {text!r}; give an ISO date-time "
            "(2026-11-23T08:00), a Unix time or a duration back from now (15m, 2h)"
        ) from None


def query(path: Path, q: Query) -> list[dict[str, Any]]:
    """Events matching ``q``, oldest first (by capture time)."""
    where: list[str] = []
    params: list[Any] = []
    for column, values in (
        ("stream_id", q.cameras),
        ("rule", q.rules),
        ("kind", q.kinds),
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
    sql = "SELECT * FROM events"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY capture_ts, stream_id, seq, event_id"
    if q.limit:
        sql += f" LIMIT {int(q.limit)}"
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            db.row_factory = sqlite3.Row
            rows = [dict(r) for r in db.execute(sql, params)]
    except sqlite3.Error as e:
        raise FramechainError(f"cannot read the event store {path}: {e}") from e
    for row in rows:
        row["data"] = json.loads(row["data"]) if row.get("data") else {}
        row["low_confidence"] = bool(row.get("low_confidence", 0))
    return rows


def local_time(ts: float) -> str:
    return datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="milliseconds")


def render(rows: list[dict[str, Any]], fmt: str) -> str:
    """``table`` (for people), ``json`` (one array) or ``csv`` (every column)."""
    if fmt == "json":
        return json.dumps(rows, indent=1) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "data": json.dumps(row["data"])})
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
