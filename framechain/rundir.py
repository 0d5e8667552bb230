"""The run's runtime folder (ipc:// sockets): chosen or temporary, and the
temporary folders of dead runs swept away."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pipeline.errors import FramechainError
from pipeline.shm import pid_alive

log = logging.getLogger(__name__)


def runtime_folder(loaded: Any, explicit: str | None) -> tuple[Path, bool]:
    """The folder for ipc:// sockets, created private (0700); True if temporary."""
    chosen = explicit or loaded.config.runtime_dir
    if chosen:
        path = Path(chosen)
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            _make_private(path)
        except OSError as e:
            raise FramechainError(
                f"runtime_dir {path}: {e.strerror or e}; choose a folder this user "
                "owns (its sockets must be private)"
            ) from None
        return path, False
    return Path(tempfile.mkdtemp(prefix="framechain-")), True


def _make_private(path: Path) -> None:
    """Anyone who can reach a stage's ipc:// socket can feed it messages, so the
    folder is this user's alone: an existing one (systemd's RuntimeDirectory is
    0755) is narrowed to 0700; one of another user is refused."""
    info = path.stat()
    if info.st_uid != os.geteuid():
        raise PermissionError(1, f"owned by uid {info.st_uid}, not this user")
    if info.st_mode & 0o077:
        log.info("runtime_dir %s was mode %o: now 0700", path, info.st_mode & 0o777)
        path.chmod(0o700)


SUPERVISOR_PID_FILE = "supervisor.pid"


def sweep_runtime_folders() -> None:
    """Remove the temporary runtime folders of runs whose supervisor is dead (a
    run killed whole leaves its folder behind); other live runs' are kept."""
    for folder in Path(tempfile.gettempdir()).glob("framechain-*"):
        try:
            pid = int((folder / SUPERVISOR_PID_FILE).read_text())
        except (OSError, ValueError):
            continue  # not a supervisor's, or not readable by this user
        if not pid_alive(pid):
            shutil.rmtree(folder, ignore_errors=True)


def claim(folder: Path) -> None:
    """Mark a temporary runtime folder as this supervisor's."""
    (folder / SUPERVISOR_PID_FILE).write_text(str(os.getpid()))
