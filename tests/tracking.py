"""The reference ``stages.bytetrack`` is held to: the ``trackers`` package's
``ByteTrackTracker`` (the tracker framechain used before), fed the same detections."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from stages.bytetrack import ByteTrack, lost_frames_budget

Boxes = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]  # xyxy, confidence


def assert_same_tracks(
    frames: Sequence[Boxes],
    fps: float,
    *,
    lost_track_s: float = 1.0,
    activation_threshold: float = 0.25,
    high_confidence: float = 0.5,
    min_consecutive_frames: int = 2,
    match_iou: float = 0.1,
) -> int:
    """Run both trackers over ``frames``; every frame must give the same rows with
    the same ids, and every track the same Kalman mean to the last bit. Returns
    how many (row, id) pairs were compared."""
    import supervision as sv
    from trackers import ByteTrackTracker

    reference = ByteTrackTracker(
        lost_track_buffer=max(1, round(lost_track_s * 30)),
        frame_rate=fps,
        track_activation_threshold=activation_threshold,
        minimum_consecutive_frames=min_consecutive_frames,
        minimum_iou_threshold=match_iou,
        high_conf_det_threshold=high_confidence,
    )
    ours = ByteTrack(
        max_lost_frames=lost_frames_budget(lost_track_s, fps),
        activation_threshold=activation_threshold,
        high_confidence=high_confidence,
        min_consecutive_frames=min_consecutive_frames,
        match_iou=match_iou,
    )
    assert ours.max_lost_frames == reference.maximum_frames_without_update
    compared = 0
    for index, (xyxy, confidence) in enumerate(frames):
        out = reference.update(
            sv.Detections(
                xyxy=xyxy,
                confidence=confidence,
                class_id=np.zeros(len(xyxy), int),
                data={"row": np.arange(len(xyxy))},
            )
        )
        confirmed = np.asarray(out.tracker_id) >= 0
        want_rows = out.data["row"][confirmed] if len(out) else np.empty(0, int)
        want_ids = np.asarray(out.tracker_id)[confirmed]
        rows, ids = ours.update(xyxy, confidence)
        assert rows.tolist() == want_rows.tolist(), f"frame {index}: rows differ"
        assert ids.tolist() == want_ids.tolist(), f"frame {index}: ids differ"
        means = np.array([t.state_estimator.kf.state[:, 0] for t in reference.tracks])
        assert np.array_equal(means.reshape(-1, 8), ours.state), f"frame {index}"
        compared += len(ids)
    return compared
