"""ByteTrack with every track's Kalman filter in one set of arrays.

The algorithm, its thresholds and its arithmetic are those of the ``trackers``
package's ``ByteTrackTracker`` (2.6, fixed-rate mode: one predict step per frame):
two-stage IoU matching (confident boxes first, then the rest against the tracks left
over), a constant-velocity Kalman filter on the box corners, ids given after
``min_consecutive_frames`` matched frames and tracks kept ``max_lost_frames`` frames
after their last match. It gives the same ids on the same detections (the tests
hold it to that, frame by frame).

Why our own: ``trackers`` keeps one Python object and one 8×8 filter per track and
steps them one at a time, behind a conversion to and from ``supervision.Detections``
on every frame; that was half of a camera's tracking CPU in a crowd. Here predict and
update are a few numpy operations over all tracks at once, and the per-camera
process no longer imports supervision for it.
"""

from __future__ import annotations

import math

import lap
import msgspec
import numpy as np
import numpy.typing as npt

from pipeline.detections import box_iou
from pipeline.state import Array

_STATE = 8  # x1, y1, x2, y2 and their velocities
_PROCESS_NOISE = np.eye(_STATE) * 0.01  # ByteTrack's tuning of the filter's noise
_MEASUREMENT_NOISE = np.eye(4) * 0.1
_IDENTITY = np.eye(_STATE)

IntArray = npt.NDArray[np.int64]


def lost_frames_budget(lost_track_s: float, fps: float) -> int:
    """Frames a track survives without a match: ``lost_track_s`` seconds at ``fps``,
    counted the way ``trackers`` does (a buffer of 30 fps frames, scaled)."""
    buffer = max(1, round(lost_track_s * 30))
    return max(1, math.ceil(fps / 30.0 * buffer))


def iou_matrix(
    boxes_a: npt.NDArray[np.floating], boxes_b: npt.NDArray[np.floating]
) -> npt.NDArray[np.float32]:
    """(n, m) IoU in float64, returned as float32, as supervision's ``box_iou_batch``
    computes it for ``trackers`` (matching decisions depend on the last bit)."""
    iou = box_iou(boxes_a.astype(np.float64), boxes_b.astype(np.float64))
    return iou.astype(np.float32)


def _associate(
    similarity: npt.NDArray[np.float32], threshold: float
) -> tuple[IntArray, IntArray, IntArray, IntArray]:
    """Optimal assignment, pairs under ``threshold`` dropped. Returns matched rows,
    matched columns (in row order), unmatched rows, unmatched columns (sorted)."""
    n_rows, n_cols = similarity.shape
    rows = cols = np.empty(0, np.int64)
    if n_rows and n_cols:
        # LAPJV (lap, as Ultralytics' trackers use) rather than scipy's
        # linear_sum_assignment: the same optimum (identical pairs on 20 000 random
        # sparse similarity matrices), without loading scipy.optimize into every
        # track process. It minimises: the similarity goes in negated.
        _, assigned, _ = lap.lapjv(-similarity, extend_cost=True)
        rows = np.flatnonzero(assigned >= 0)
        cols = assigned[rows]
        keep = similarity[rows, cols] >= threshold
        rows, cols = rows[keep].astype(np.int64), cols[keep].astype(np.int64)
    free_rows = np.ones(n_rows, bool)
    free_rows[rows] = False
    free_cols = np.ones(n_cols, bool)
    free_cols[cols] = False
    return rows, cols, np.flatnonzero(free_rows), np.flatnonzero(free_cols)


class ByteTrackState(msgspec.Struct, frozen=True):
    """Every track's filter, id and counters, and the next id to give. The
    thresholds are not in it: they come from the config the tracker is built
    from."""

    next_id: int
    state: Array
    covariance: Array
    ids: Array
    streak: Array
    missed: Array

    def __post_init__(self) -> None:
        n = self.ids.shape[0] if len(self.ids.shape) == 1 else -1
        if (
            self.state.shape != (n, _STATE)
            or self.covariance.shape != (n, _STATE, _STATE)
            or self.streak.shape != (n,)
            or self.missed.shape != (n,)
        ):
            raise ValueError(f"tracker columns do not fit {n} tracks")


class ByteTrack:
    """One camera's tracks. Not thread-safe; ids count from 0 per instance."""

    def __init__(
        self,
        *,
        max_lost_frames: int,
        activation_threshold: float,
        high_confidence: float,
        min_consecutive_frames: int,
        match_iou: float,
    ) -> None:
        self.max_lost_frames = max_lost_frames
        self.activation_threshold = activation_threshold
        self.high_confidence = high_confidence
        self.min_consecutive_frames = min_consecutive_frames
        self.match_iou = match_iou
        self._next_id = 0
        self.state = np.empty((0, _STATE))  # Kalman means
        self.covariance = np.empty((0, _STATE, _STATE))
        self.ids = np.empty(0, np.int64)  # -1 until confirmed
        self.streak = np.empty(0, np.int64)  # consecutive matched frames
        self.missed = np.empty(0, np.int64)  # frames since the last match

    def __len__(self) -> int:
        return len(self.ids)

    def snapshot(self) -> ByteTrackState:
        return ByteTrackState(
            self._next_id,
            Array.of(self.state),
            Array.of(self.covariance),
            Array.of(self.ids),
            Array.of(self.streak),
            Array.of(self.missed),
        )

    def restore(self, saved: ByteTrackState) -> None:
        self._next_id = saved.next_id
        self.state, self.covariance = saved.state.value(), saved.covariance.value()
        self.ids, self.streak = saved.ids.value(), saved.streak.value()
        self.missed = saved.missed.value()

    def update(
        self, xyxy: npt.NDArray[np.float32], confidence: npt.NDArray[np.float32]
    ) -> tuple[IntArray, IntArray]:
        """Step every track one frame and match this frame's boxes.

        Returns:
            (rows, ids): the rows of ``xyxy`` that belong to a confirmed track and
            that track's id, in ``trackers``' output order (first-stage matches,
            then second-stage ones).
        """
        if not len(self) and not len(xyxy):
            return np.empty(0, np.int64), np.empty(0, np.int64)
        self._predict()
        confident = confidence >= self.high_confidence
        high = np.flatnonzero(confident)
        low = np.flatnonzero(~confident)
        iou = iou_matrix(self.state[:, :4], xyxy)  # element-wise: one for both stages
        tracks_1, cols_1, left_tracks, free_high = _associate(
            iou[:, high], self.match_iou
        )
        rows_2, cols_2, _, _ = _associate(iou[np.ix_(left_tracks, low)], self.match_iou)
        matched_tracks = np.concatenate([tracks_1, left_tracks[rows_2]])
        matched_rows = np.concatenate([high[cols_1], low[cols_2]])
        self._correct(matched_tracks, xyxy[matched_rows])
        ids = self._confirm(matched_tracks)

        spawn = high[free_high]
        self._spawn(xyxy[spawn[confidence[spawn] >= self.activation_threshold]])
        self._prune()
        keep = ids >= 0
        return matched_rows[keep], ids[keep]

    def _predict(self) -> None:
        """x = F x, P = F P Fᵀ + Q for a one-frame step, with F's structure (each
        corner plus its velocity) written out: the same sums a matrix product of F
        makes, without 64 multiplications by 0 and 1 per track."""
        x, p = self.state, self.covariance
        x[:, :4] += x[:, 4:]
        p[:, :4, :] += p[:, 4:, :]
        p[:, :, :4] += p[:, :, 4:]
        p += _PROCESS_NOISE
        self.streak[self.missed > 0] = 0
        self.missed += 1

    def _correct(self, tracks: IntArray, boxes: npt.NDArray[np.float32]) -> None:
        """Kalman update of the matched tracks with their boxes (H = [I 0]),
        Joseph form, as ``trackers``' filter does it."""
        if not len(tracks):
            return
        x = self.state[tracks][:, :, None]
        p = self.covariance[tracks]
        p_ht = p[:, :, :4]
        gain = p_ht @ np.linalg.inv(p[:, :4, :4] + _MEASUREMENT_NOISE)
        innovation = boxes.astype(np.float64)[:, :, None] - x[:, :4]
        self.state[tracks] = (x + gain @ innovation)[:, :, 0]
        i_kh = np.repeat(_IDENTITY[None], len(tracks), axis=0)
        i_kh[:, :, :4] -= gain
        self.covariance[tracks] = i_kh @ p @ i_kh.transpose(0, 2, 1) + (
            gain @ _MEASUREMENT_NOISE
        ) @ gain.transpose(0, 2, 1)
        self.missed[tracks] = 0
        self.streak[tracks] += 1

    def _confirm(self, tracks: IntArray) -> IntArray:
        """Give ids, in match order, to tracks that just reached the streak;
        returns every matched track's id (-1: not yet confirmed)."""
        ids = self.ids[tracks]
        new = (ids < 0) & (self.streak[tracks] >= self.min_consecutive_frames)
        count = int(new.sum())
        if count:
            ids[new] = np.arange(self._next_id, self._next_id + count)
            self._next_id += count
            self.ids[tracks[new]] = ids[new]
        return ids

    def _spawn(self, boxes: npt.NDArray[np.float32]) -> None:
        n = len(boxes)
        if not n:
            return
        state = np.zeros((n, _STATE))
        state[:, :4] = boxes
        self.state = np.concatenate([self.state, state])
        self.covariance = np.concatenate(
            [self.covariance, np.repeat(_IDENTITY[None], n, axis=0)]
        )
        self.ids = np.concatenate([self.ids, np.full(n, -1, np.int64)])
        self.streak = np.concatenate([self.streak, np.ones(n, np.int64)])
        self.missed = np.concatenate([self.missed, np.zeros(n, np.int64)])

    def _prune(self) -> None:
        """Drop tracks lost too long, and unconfirmed ones that missed a frame."""
        alive = (self.missed <= self.max_lost_frames) & (
            (self.ids >= 0)
            | (self.streak >= self.min_consecutive_frames)
            | (self.missed == 0)
        )
        if alive.all():
            return
        self.state = self.state[alive]
        self.covariance = self.covariance[alive]
        self.ids = self.ids[alive]
        self.streak = self.streak[alive]
        self.missed = self.missed[alive]
