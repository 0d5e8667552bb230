"""A cache of compiled models (TensorRT engines, OpenVINO IR, ONNX exports), keyed by
everything that makes a compiled model valid.

A TensorRT engine is only good for the GPU model, compute capability and TensorRT
version it was built with, and for its precision, batch and input size; Frigate
makes its users rebuild engines by hand, and a stale engine either fails to load or
loads and misbehaves. Here the key is a hash of the source model's bytes plus every
one of those facts, so a key change builds a new entry, and each entry carries a
manifest with the checksum of its files, so a truncated or corrupted artifact is
detected and rebuilt, never loaded. Entries are written to a temporary name and
renamed into place, with the manifest last: a build killed half-way leaves nothing
that looks valid.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline.errors import FramechainError

log = logging.getLogger(__name__)

CACHE_ENV = "FRAMECHAIN_CACHE"
Format = Literal["onnx", "openvino", "engine"]
SUFFIX = {"onnx": ".onnx", "openvino": "_openvino_model", "engine": ".engine"}


class ModelCacheError(FramechainError, OSError):
    """The cache folder cannot be used (permissions, full disk)."""


@dataclass(frozen=True, slots=True)
class CompileSpec:
    """What to build from a source model.

    Attributes:
        format: ``onnx``, ``openvino`` or ``engine`` (TensorRT).
        imgsz: input size (long side; square for fixed-shape builds).
        batch: batch size (the largest, for dynamic builds).
        dynamic: dynamic batch and input size.
        precision: ``fp32``, ``fp16`` or ``int8`` (int8 needs calibration images).
        calibration: folder of calibration images (int8 only); its file names and
            sizes are part of the key.
    """

    format: Format
    imgsz: int = 640
    batch: int = 1
    dynamic: bool = True
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    calibration: str | None = None


def default_cache_dir() -> Path:
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return (
        Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "framechain"
    )


def file_digest(path: Path) -> str:
    """sha256 of a file, or of a folder's files (names and contents, sorted)."""
    digest = hashlib.sha256()
    files = (
        sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    )
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _calibration_digest(folder: str | None) -> str | None:
    if folder is None:
        return None
    digest = hashlib.sha256()
    for file in sorted(Path(folder).rglob("*")):
        if file.is_file():
            digest.update(f"{file.name}:{file.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


def cache_key(
    source: Path, spec: CompileSpec, platform: Mapping[str, str]
) -> tuple[str, dict[str, Any]]:
    """(key, the fields it hashes): the source model's bytes, the build spec and
    the platform facts (runtime versions, GPU name and compute capability)."""
    fields: dict[str, Any] = {
        "model_sha256": file_digest(source),
        **asdict(spec),
        "calibration": _calibration_digest(spec.calibration),
        **dict(sorted(platform.items())),
    }
    encoded = json.dumps(fields, sort_keys=True).encode()
    return hashlib.sha256(encoded).hexdigest()[:20], fields


@dataclass(frozen=True, slots=True)
class CacheEntry:
    path: Path
    key: str
    built: bool  # False: reused from the cache
    reason: str  # why it was built: missing, corrupt, unreadable manifest


Builder = Callable[[Path, CompileSpec, Path], Path]
"""(source, spec, work folder) -> the artifact built inside the work folder."""


class ModelCache:
    """Compiled models under ``root``, one entry per key."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def entry_path(self, source: Path, spec: CompileSpec, key: str) -> Path:
        return self.root / f"{source.stem}-{spec.precision}-{key}{SUFFIX[spec.format]}"

    def get(
        self,
        source: Path,
        spec: CompileSpec,
        platform: Mapping[str, str],
        build: Builder,
    ) -> CacheEntry:
        """The entry for this source, spec and platform: verified and reused, or
        built (on a miss, a key change, or a corrupted artifact)."""
        key, fields = cache_key(source, spec, platform)
        path = self.entry_path(source, spec, key)
        problem = self.verify(path, key)
        if problem is None:
            log.info("model cache: reusing %s", path.name)
            return CacheEntry(path, key, False, "")
        log.warning("model cache: building %s (%s)", path.name, problem)
        self._build(source, spec, path, key, fields, build)
        return CacheEntry(path, key, True, problem)

    def verify(self, path: Path, key: str) -> str | None:
        """None when the entry is complete and intact, else what is wrong."""
        manifest = _manifest_path(path)
        if not path.exists() and not manifest.exists():
            return "not in the cache"
        try:
            recorded = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError):
            return "no readable manifest (an interrupted build?)"
        if recorded.get("key") != key:
            return "manifest key does not match"
        if not path.exists():
            return "artifact missing"
        if file_digest(path) != recorded.get("sha256"):
            return "artifact corrupted (checksum mismatch)"
        return None

    def invalidate(self, path: Path) -> None:
        """Drop an entry (e.g. an engine the runtime refused to deserialize)."""
        _manifest_path(path).unlink(missing_ok=True)
        _remove(path)

    def _build(
        self,
        source: Path,
        spec: CompileSpec,
        path: Path,
        key: str,
        fields: dict[str, Any],
        build: Builder,
    ) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.invalidate(path)
            with tempfile.TemporaryDirectory(prefix=".build-", dir=self.root) as work:
                started = time.monotonic()
                artifact = build(source, spec, Path(work))
                os.replace(artifact, path)
                manifest = {
                    "key": key,
                    "fields": fields,
                    "sha256": file_digest(path),
                    "source": str(source),
                    "built_s": round(time.monotonic() - started, 1),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
                staged = Path(work) / "manifest.json"
                staged.write_text(json.dumps(manifest, indent=2))
                os.replace(staged, _manifest_path(path))
        except OSError as e:
            raise ModelCacheError(
                f"cannot write the model cache in {self.root}: {e.strerror or e}; "
                f"free space or point {CACHE_ENV} (or detector.cache_dir) elsewhere"
            ) from e


def _manifest_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
