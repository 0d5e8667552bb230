"""Notices when a file changes (the config, for a rules reload), by polling its
modification time and size once a second: inotify would miss an editor's
rename-over-save on some filesystems, and a second is quick enough for rules."""

from __future__ import annotations

import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


class FileWatch:
    """``changed()`` is true once per change of ``path`` (never when it is None)."""

    def __init__(self, path: Path | None, every_s: float = 1.0) -> None:
        self.path = path
        self.every_s = every_s
        self._stamp = self._read()
        self._next_check = 0.0

    def _read(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            stat = self.path.stat()
        except OSError:
            return None  # mid-save or removed: keep what we have, look again later
        return stat.st_mtime_ns, stat.st_size

    def changed(self) -> bool:
        now = time.monotonic()
        if self.path is None or now < self._next_check:
            return False
        self._next_check = now + self.every_s
        stamp = self._read()
        if stamp is None or stamp == self._stamp:
            return False
        self._stamp = stamp
        log.info("%s changed", self.path.name)
        return True
