"""The chain's state as a file in the run's runtime folder, for services: they
read it when they like, and a dead or stopped reader costs the supervisor nothing
(no socket to fill, no answer to wait for).

The supervisor writes its snapshot (each stage's state, restarts and last heartbeat
statistics) about once a second, atomically (a temporary file renamed over the
old one), so a reader never sees half a document. A reader that finds it older
than a few seconds knows the supervisor is gone.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
INTERVAL_S = 1.0


def status_path(runtime_dir: Path) -> Path:
    return runtime_dir / STATUS_FILE


def read_status(runtime_dir: Path) -> dict[str, Any] | None:
    """The last snapshot written (with ``written``, Unix time), or None when
    there is none yet."""
    try:
        data = json.loads(status_path(runtime_dir).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class StatusFile:
    """Writes snapshots to ``status.json`` at most every ``INTERVAL_S``."""

    def __init__(self, runtime_dir: Path) -> None:
        self.path = status_path(runtime_dir)
        self._next = 0.0
        self._failed = False

    def due(self, now: float) -> bool:
        return now >= self._next

    def write(self, snapshot: dict[str, Any], now: float) -> None:
        self._next = now + INTERVAL_S
        body = {"written": time.time(), **snapshot}
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        try:
            temporary.write_text(json.dumps(body, default=str))
            os.replace(temporary, self.path)
        except OSError as e:
            if not self._failed:  # once, not every second
                log.warning("cannot write the status file %s: %s", self.path, e)
            self._failed = True
