"""Demand for an on-demand tap: a stage makes a costly copy for a service beside
the chain (a camera's preview pictures for the API) only while the service says
someone wants it.

The service says so by touching a file in the run directory, at most once a
second while it is wanted; the stage looks at the file's time at most twice a
second. A file rather than a socket: a service that is killed or frozen simply
stops asking, and the stage stops copying within ``HOLD_S``, with nothing to
time out or reconnect on either side.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

HOLD_S = 3.0
"""A demand this old has lapsed: the asker touches the file every ``ASK_EVERY_S``."""
ASK_EVERY_S = 1.0
CHECK_EVERY_S = 0.5


def demand_path(runtime_dir: Path, tap: str, target: str) -> Path:
    """The file that says ``tap`` of ``target`` (a camera) is wanted."""
    return runtime_dir / "demand" / f"{tap}.{target}"


class Demand:
    """The asking side: ``ask`` while someone wants the tap."""

    def __init__(self, runtime_dir: Path, tap: str) -> None:
        self.runtime_dir = runtime_dir
        self.tap = tap
        self._asked: dict[str, float] = {}

    def ask(self, target: str) -> None:
        """Keeps the demand for ``target`` alive (cheap to call on every frame)."""
        now = time.monotonic()
        if now - self._asked.get(target, -ASK_EVERY_S) < ASK_EVERY_S:
            return
        self._asked[target] = now
        path = demand_path(self.runtime_dir, self.tap, target)
        try:
            path.touch()
        except FileNotFoundError:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.touch()


class DemandProbe:
    """The producing side: whether the tap is wanted now, from the file's time,
    looked at no more than every ``CHECK_EVERY_S``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._checked = -CHECK_EVERY_S
        self._wanted = False

    def wanted(self) -> bool:
        now = time.monotonic()
        if now - self._checked >= CHECK_EVERY_S:
            self._checked = now
            try:
                age = time.time() - os.stat(self.path).st_mtime
            except OSError:
                self._wanted = False
            else:
                # a clock stepped back makes the age negative: still wanted
                self._wanted = age < HOLD_S
        return self._wanted
