"""What the detect stage reports in its heartbeats."""

from __future__ import annotations

import msgspec

from pipeline.metrics import HistogramReport


class DetectStats(msgspec.Struct, kw_only=True):
    frames: int = 0  # inferred
    batches: int = 0
    frames_gated: int = 0  # skipped by the motion gate
    frames_missed: int = 0  # shared-memory slot overwritten before it was read
    stale_resends: int = 0
    crops_classified: int = 0
    mean_batch: float = 0.0
    streams: int = 0
    max_batch: int = 0
    infer_ms_per_frame: float = 0.0
    frame_age_in_p50_s: float = 0.0
    frame_age_in_p99_s: float = 0.0
    inference: HistogramReport | None = None
