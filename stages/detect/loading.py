"""Loading the detector: the configured model, compiled through the cache first
when ``detector.compile`` asks, as one warmed-up copy per inference stream."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.errors import ModelFormatError
from stages.detect.config import DetectorConfig

log = logging.getLogger(__name__)


def load_models(config: DetectorConfig, model_path: Path) -> tuple[list[Any], int]:
    """The model's copies and the largest batch to give them.

    Raises:
        ModelFormatError / BackendUnavailableError: the runtime refuses the model,
            or is not installed.
    """
    path = compiled(config, model_path) if config.compile else model_path
    try:
        return _load(config, path)
    except ModelFormatError:
        if not config.compile:
            raise
        # verified by checksum, yet refused by the runtime (a driver update the key
        # cannot see): rebuild once rather than fail the camera
        log.warning("cached %s refused by its runtime; rebuilding", path.name)
        return _load(config, compiled(config, model_path, invalidate=path))


def _load(cfg: DetectorConfig, path: Path) -> tuple[list[Any], int]:
    """One warmed-up copy of the model per inference stream."""
    from stages.detect.backends import (
        inference_batch,
        inference_streams,
        load_backend,
        threads_per_stream,
    )

    streams = cfg.streams or inference_streams(path, cfg.device, cfg.threads)
    threads = threads_per_stream(cfg.threads, streams)
    max_batch = cfg.max_batch or inference_batch(path, cfg.device, streams)
    models = []
    for _ in range(streams):
        model = load_backend(path, cfg.imgsz, threads, cfg.device, cfg.half)
        model.warm_up()
        models.append(model)
    log.info(
        "%s on %s: %d stream(s) of %d thread(s), batches of up to %d",
        path.name,
        models[0].runtime,
        streams,
        threads,
        max_batch,
    )
    return models, max_batch


def compiled(
    cfg: DetectorConfig, model_path: Path, invalidate: Path | None = None
) -> Path:
    """The compiled model from the cache, built when missing or stale."""
    from stages.detect.backends import DEFAULT_MAX_BATCH
    from stages.detect.export import compile_model
    from stages.detect.modelcache import CompileSpec, ModelCache, default_cache_dir

    assert cfg.compile is not None
    cache = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    if invalidate is not None:
        ModelCache(cache).invalidate(invalidate)
    spec = CompileSpec(
        format=cfg.compile,
        imgsz=cfg.imgsz,
        batch=cfg.max_batch or DEFAULT_MAX_BATCH,
        precision=cfg.precision,
        calibration=str(cfg.calibration) if cfg.calibration else None,
    )
    entry, _ = compile_model(model_path, spec, cache, cfg.max_drift)
    return entry.path
