"""The reference ``stages.track.bytetrack`` is held to: the ``trackers`` package's
``ByteTrackTracker`` (the tracker framechain used before), fed the same detections,
both built from one ``TrackerConfig`` the way the benchmark builds them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from benchmarks.reference_tracker import reference_tracker
from stages.track.config import TrackerConfig
from stages.track.tracking import make_tracker

Boxes = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]  # xyxy, confidence


def assert_same_tracks(
    frames: Sequence[Boxes], fps: float, config: TrackerConfig | None = None
) -> int:
    """Run both trackers over ``frames``; every frame must give the same rows with
    the same ids, and every track the same Kalman mean to the last bit. Returns
    how many (row, id) pairs were compared."""
    config = config or TrackerConfig()
    reference, reference_update = reference_tracker(config, fps)
    ours = make_tracker(config, fps)
    assert ours.max_lost_frames == reference.maximum_frames_without_update
    compared = 0
    for index, (xyxy, confidence) in enumerate(frames):
        want_rows, want_ids = reference_update(xyxy, confidence)
        rows, ids = ours.update(xyxy, confidence)
        assert rows.tolist() == want_rows.tolist(), f"frame {index}: rows differ"
        assert ids.tolist() == want_ids.tolist(), f"frame {index}: ids differ"
        means = np.array([t.state_estimator.kf.state[:, 0] for t in reference.tracks])
        assert np.array_equal(means.reshape(-1, 8), ours.state), f"frame {index}"
        compared += len(ids)
    return compared
