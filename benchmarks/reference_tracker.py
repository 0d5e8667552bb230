"""The ``trackers`` package's ByteTrack configured like ours: the reference our
port (``stages.track.bytetrack``) is measured against by ``framechain bench
tracker`` and held to by the parity tests (the one benchmarks module the tests
import: it times nothing). Needs the ``ultralytics`` extra; no stage imports it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from stages.track.config import TrackerConfig

Tracker = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""(xyxy, confidence) -> (rows, ids) of the confirmed tracks."""


def reference_tracker(config: TrackerConfig, fps: float) -> tuple[Any, Tracker]:
    """``trackers``' ByteTrack with ``config``'s settings, and its update wrapped as
    the track stage wrapped it before (a row column through ``supervision.Detections``
    and back) into (rows, ids) of the confirmed tracks, as ``ByteTrack.update``
    gives them."""
    import supervision as sv
    from trackers import ByteTrackTracker

    tracker = ByteTrackTracker(
        lost_track_buffer=max(1, round(config.lost_track_s * 30)),
        frame_rate=fps,
        track_activation_threshold=config.activation_threshold,
        minimum_consecutive_frames=config.min_consecutive_frames,
        minimum_iou_threshold=config.match_iou,
        high_conf_det_threshold=config.high_confidence,
    )

    def update(xyxy: np.ndarray, confidence: np.ndarray) -> tuple[Any, Any]:
        out = tracker.update(
            sv.Detections(
                xyxy=xyxy,
                confidence=confidence,
                class_id=np.zeros(len(xyxy), np.int32),
                data={"row": np.arange(len(xyxy))},
            )
        )
        if not len(out):
            return np.empty(0, np.int64), np.empty(0, np.int64)
        ids = out.tracker_id
        assert ids is not None
        confirmed = ids >= 0
        return out.data["row"][confirmed], ids[confirmed]

    return tracker, update
