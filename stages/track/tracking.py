"""Tracking for one camera: frames in strict sequence, ByteTrack over their
detections, ids unique across outages, and an acknowledgement per frame.

A frame that arrives ahead of a gap is left for decode to re-send, and one already
applied is ignored, so tracker state and events are the same whether or not an
upstream stage was restarted mid-run.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import replace

import msgspec
import numpy as np

from pipeline.detections import Detections
from pipeline.messages import Ack, Detected, EndOfStream, Message, StreamStatus
from stages.track.bytetrack import ByteTrack, ByteTrackState, lost_frames_budget
from stages.track.config import TrackerConfig

log = logging.getLogger(__name__)


def make_tracker(config: TrackerConfig, fps: float) -> ByteTrack:
    """A camera's tracker for a stream at ``fps`` (the lost budget is in seconds,
    so it means the same at any frame rate). Shared with the tracker benchmark and
    its parity tests."""
    return ByteTrack(
        max_lost_frames=lost_frames_budget(config.lost_track_s, fps),
        activation_threshold=config.activation_threshold,
        high_confidence=config.high_confidence,
        min_consecutive_frames=config.min_consecutive_frames,
        match_iou=config.match_iou,
    )


class TrackingState(msgspec.Struct, frozen=True):
    """Where the sequence stands, the tracker (None before the first frame or
    after an outage) and the rate it was built for, and the id offsets."""

    next_seq: int
    epoch: int
    tracker: ByteTrackState | None
    tracker_fps: float
    id_offset: int
    max_track_id: int
    counters: dict[str, int]


class Tracking:
    """Sequence order, the tracker and its id offsets, and acknowledgements."""

    def __init__(self, stream_id: str, config: TrackerConfig) -> None:
        self.stream_id = stream_id
        self.config = config
        self.next_seq = 0
        self.epoch = 0  # of the sequence being followed (0: a file source)
        self.new_epoch = False  # the message just admitted began a new epoch
        self.ahead = False  # the message just refused came after a gap
        self.counters: dict[str, int] = defaultdict(int)
        self._tracker: ByteTrack | None = None
        self._tracker_fps = 0.0
        self._id_offset = 0
        self._max_track_id = -1

    def snapshot(self) -> TrackingState:
        return TrackingState(
            self.next_seq,
            self.epoch,
            None if self._tracker is None else self._tracker.snapshot(),
            self._tracker_fps,
            self._id_offset,
            self._max_track_id,
            dict(self.counters),
        )

    def restore(self, saved: TrackingState) -> None:
        """Back to ``saved``; the tracker is rebuilt from this config at the saved
        rate and given its tracks."""
        self.next_seq, self.epoch = saved.next_seq, saved.epoch
        self._tracker, self._tracker_fps = None, saved.tracker_fps
        if saved.tracker is not None:
            self._tracker = make_tracker(self.config, saved.tracker_fps)
            self._tracker.restore(saved.tracker)
        self._id_offset, self._max_track_id = saved.id_offset, saved.max_track_id
        self.counters = defaultdict(int, saved.counters)

    def admit(self, message: Message) -> int | None:
        """The sequence number of ``message`` if it is the next one due; None for
        a duplicate, a frame ahead of a gap, one of an older epoch, or a message
        without a sequence. A live source's newer epoch (its decode was restarted
        and numbers from 0 again) starts a new sequence at whatever of it comes
        first: frames in flight from a dead decode may be gone."""
        self.new_epoch = self.ahead = False
        if isinstance(message, Detected):
            seq, epoch = message.frame.seq, message.frame.epoch
        elif isinstance(message, EndOfStream | StreamStatus):
            seq, epoch = message.seq, message.epoch
        else:
            return None
        if epoch != self.epoch:
            if epoch < self.epoch or epoch == 0:
                self.counters["stale"] += 1
                return None
            log.info(
                "%s: a new sequence (epoch %d) from frame %d",
                self.stream_id,
                epoch,
                seq,
            )
            self.epoch, self.next_seq, self.new_epoch = epoch, seq, True
        if seq < self.next_seq:
            self.counters["duplicates"] += 1
            return None
        if seq > self.next_seq:
            self.counters["out_of_order"] += 1  # decode re-sends the gap
            self.ahead = True
            return None
        self.next_seq += 1
        return seq

    def ack(self, seq: int) -> Ack:
        """Every frame up to ``seq`` is done: tracked, evaluated, events handed on."""
        return Ack(self.stream_id, seq, self.epoch)

    def track(self, detections: Detections, fps: float) -> Detections:
        """ByteTrack over one frame's detections; rows it does not confirm are
        dropped, the rest keep their masks and columns and get the track's id
        (``tracker_id`` is always set, empty when nothing is tracked)."""
        if self._tracker is None or abs(fps - self._tracker_fps) > 1e-3:
            log.info("tracker for %s at %.2f fps", self.stream_id, fps)
            self._tracker = make_tracker(self.config, fps)
            self._tracker_fps = fps
        rows, ids = self._tracker.update(detections.xyxy, detections.confidence)
        tracked = replace(detections[rows], tracker_id=ids)
        if tracked.tracker_id is None or not len(tracked):
            return replace(tracked, tracker_id=np.empty(0, np.int64))
        # a fresh tracker after an outage counts from 0 again: keep ids unique
        tracked = replace(tracked, tracker_id=tracked.tracker_id + self._id_offset)
        assert tracked.tracker_id is not None
        self._max_track_id = max(self._max_track_id, int(tracked.tracker_id.max()))
        return tracked

    def reset(self) -> None:
        """The camera went offline: nothing is carried across an outage; the next
        tracker's ids start above every id used so far."""
        if self._tracker is not None:
            self._id_offset = self._max_track_id + 1
            self._tracker = None
