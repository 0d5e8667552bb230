"""Model names resolve through model directories, never through the internet, so an
air-gapped appliance works: the config's ``models_dir``, then ``FRAMECHAIN_MODELS``
(a path list), then the config file's own folder."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from pipeline.errors import ModelNotFoundError

MODELS_ENV = "FRAMECHAIN_MODELS"


def model_directories(
    configured: str | None, environ: Mapping[str, str], base_dir: Path
) -> list[Path]:
    """The directories searched, in order, without duplicates."""
    candidates: list[Path] = []
    if configured:
        candidates.append(Path(configured))
    candidates += [Path(p) for p in environ.get(MODELS_ENV, "").split(os.pathsep) if p]
    candidates.append(base_dir)
    unique: list[Path] = []
    for path in candidates:
        path = (
            path.expanduser() if path.is_absolute() else (base_dir / path).expanduser()
        )
        if path not in unique:
            unique.append(path)
    return unique


def resolve_model(name: str, directories: Sequence[Path]) -> Path:
    """Find a model file (or OpenVINO folder) by name or path.

    Raises:
        ModelNotFoundError: naming every directory searched and how to add one.
    """
    direct = Path(name).expanduser()
    if direct.is_absolute() and direct.exists():
        return direct
    for directory in directories:
        candidate = directory / name
        if candidate.exists():
            return candidate.resolve()
    searched = ", ".join(str(d) for d in directories) or "(none)"
    raise ModelNotFoundError(
        f"model {name!r} not found; searched {searched}. Put the file there, or set "
        f"models_dir in the config or {MODELS_ENV}"
    )


def keep_ultralytics_offline() -> None:
    """Call before importing Ultralytics: it otherwise checks the network at import
    and fetches fonts and assets from GitHub on demand (an int8 calibration run
    tried github.com), which an air-gapped appliance must never do. An explicit
    ``YOLO_OFFLINE`` in the environment is left as it is."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
