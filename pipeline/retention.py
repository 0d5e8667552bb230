"""Retention: how long, and how much, of what a run writes to disk is kept.

An appliance runs for months on a fixed disk. Every store that grows with time
(the event store, snapshots, annotated video segments, the spools of network
sinks) takes a ``retention`` setting and is pruned while the run goes on: oldest
first, by age and by size, at most every ``PRUNE_EVERY_S``. What was pruned is
counted in the stage's stats (and so in /metrics).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from pipeline.configtypes import StrictModel

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 2.0
PRUNED_HELP = "Files or events deleted by retention (spool: undelivered events dropped)"


class RetentionConfig(StrictModel):
    max_age_days: float | None = Field(
        default=None, gt=0, le=36500, description="Older entries are deleted."
    )
    max_size_mb: float | None = Field(
        default=None,
        gt=0,
        le=10**8,
        description="The oldest entries are deleted while the total is above this.",
    )

    @property
    def max_bytes(self) -> int | None:
        return None if self.max_size_mb is None else int(self.max_size_mb * 1e6)

    @property
    def max_age_s(self) -> float | None:
        return None if self.max_age_days is None else self.max_age_days * 86400


@dataclass
class Pruned:
    """What a store has deleted so far under its retention."""

    files: int = 0
    bytes: int = 0
    entries: int = 0


class Pacer:
    """True at most once every ``every_s`` (pruning scans a folder or a table)."""

    def __init__(self, every_s: float = PRUNE_EVERY_S) -> None:
        self.every_s = every_s
        self._next = 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.every_s
        return True


def prune_files(
    paths: Iterable[Path],
    retention: RetentionConfig,
    pruned: Pruned,
    keep: frozenset[Path] = frozenset(),
) -> int:
    """Of ``paths`` (one store's files), delete the oldest by modification time
    that are older than the age limit, then while their total is over the size
    limit; ``keep``: files being written, never deleted. Returns the bytes left."""
    files = []
    for path in paths:
        try:
            info = path.stat()
        except OSError:
            continue  # removed meanwhile
        files.append((info.st_mtime, info.st_size, path))
    files.sort()
    total = sum(size for _, size, _ in files)
    oldest_kept = (
        time.time() - retention.max_age_s if retention.max_age_s is not None else None
    )
    limit = retention.max_bytes
    for mtime, size, path in files:
        too_old = oldest_kept is not None and mtime < oldest_kept
        too_big = limit is not None and total > limit
        if not (too_old or too_big):
            break
        if path in keep:
            continue
        try:
            path.unlink()
        except OSError as e:
            log.warning("cannot prune %s: %s", path, e.strerror)
            continue
        total -= size
        pruned.files += 1
        pruned.bytes += size
    return total
