"""The run's runtime folder (ipc:// sockets): chosen or temporary, and the
temporary folders of dead runs swept away."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pipeline.shm import pid_alive


def runtime_folder(loaded: Any, explicit: str | None) -> tuple[Path, bool]:
    """The folder for ipc:// sockets, created private (0700); True if temporary."""
    chosen = explicit or loaded.config.runtime_dir
    if chosen:
        path = Path(chosen)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path, False
    return Path(tempfile.mkdtemp(prefix="framechain-")), True


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
