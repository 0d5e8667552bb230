"""Media taps of one camera: what the track stage does with a frame's pixels besides
counting — privacy redaction, each track's best crop (snapshots), the tracked
frame handed to the annotate stage and the small preview for the API.

All of it runs before the frame is acknowledged: the shared-memory slot the pixels
sit in is reused by decode once it is.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from pipeline.detections import Detections
from pipeline.errors import SlotOverwrittenError
from pipeline.messages import Detected, Overlay
from pipeline.shm import RingReader
from pipeline.stage import Emit
from stages.track.config import PrivacyConfig, SnapshotConfig

if TYPE_CHECKING:
    from stages.track.preview import PreviewTap
    from stages.track.snapshots import SnapshotStore

log = logging.getLogger(__name__)


class SnapshotState(msgspec.Struct, frozen=True, array_like=True):
    """A track's best crop as a checkpoint keeps it: its confidence, its file
    and epoch, and whether a better crop was still to be written (the next crop
    of the track is then taken whatever its confidence)."""

    confidence: float
    path: str
    epoch: int
    pending: bool


class TapsState(msgspec.Struct, frozen=True):
    """Each track's snapshot bookkeeping (empty with snapshots off)."""

    snapshots: dict[int, SnapshotState]


class MediaTaps:
    def __init__(
        self,
        stream_id: str,
        snapshots: SnapshotConfig | None = None,
        annotate: bool = False,
        privacy: PrivacyConfig | None = None,
        preview: PreviewTap | None = None,
    ) -> None:
        """``annotate``: emit tracked frames with pixels on the ``annotate`` port.
        ``privacy``: hide these classes in those frames, previews and snapshots.
        ``preview``: small copies on the ``preview`` port while wanted."""
        self.stream_id = stream_id
        self.snapshot_config = snapshots
        self.annotate = annotate
        self.privacy = privacy
        self.preview_tap = preview
        self.snapshots: SnapshotStore | None = None
        self._private_classes = np.empty(0, np.int32)
        self._reader = RingReader()
        self.counters: dict[str, int] = defaultdict(int)

    @property
    def wants_pixels(self) -> bool:
        return self.snapshots is not None or self.annotate

    def setup(self) -> None:
        # OpenCV (JPEG, blurring) is loaded only where snapshots or privacy are on
        if self.snapshot_config is not None:
            from stages.track.snapshots import SnapshotStore

            self.snapshots = SnapshotStore(self.snapshot_config, self.stream_id)

    def resolve_classes(self, names: tuple[str, ...]) -> None:
        if self.privacy is None:
            return
        index = {name: i for i, name in enumerate(names)}
        self._private_classes = np.array(
            [index[c] for c in self.privacy.classes if c in index], np.int32
        )

    def pixels(
        self, message: Detected, parts: Sequence[Any], detections: Detections
    ) -> np.ndarray | None:
        """The frame's pixels, redacted when privacy is on; None when they are not
        needed or not to be had."""
        if not self.wants_pixels:
            return None
        pixels = self._view(message, parts)
        if pixels is not None and self.privacy is not None:
            from stages.track.privacy import redact

            pixels = redact(pixels, detections, self._private_classes, self.privacy)
        return pixels

    def _view(self, message: Detected, parts: Sequence[Any]) -> np.ndarray | None:
        frame = message.frame
        shape = frame.pixel_shape
        try:
            if message.pixels:
                return np.frombuffer(parts[-1], np.uint8).reshape(shape)
            if frame.shm is not None:
                # decode does not reuse the slot before this frame is acknowledged
                return self._reader.view(frame.shm, shape)
        except (SlotOverwrittenError, ValueError) as e:
            log.warning("no pixels for frame %d: %s", frame.seq, e)
        self.counters["frames_without_pixels"] += 1
        return None

    def offer(self, pixels: np.ndarray | None, tracked: Detections) -> None:
        """Keep each track's best crop so far."""
        if self.snapshots is None or pixels is None or not len(tracked):
            return
        assert tracked.tracker_id is not None
        self.snapshots.offer(
            pixels, tracked.xyxy, tracked.confidence, tracked.tracker_id
        )

    def snapshot_path(self, track_id: int, _epoch: int) -> str:
        """The track's snapshot file (its name carries the epoch it began in)."""
        return self.snapshots.path(track_id) if self.snapshots is not None else ""

    def snapshot(self) -> TapsState:
        return TapsState(self.snapshots.state() if self.snapshots is not None else {})

    def restore(self, saved: TapsState) -> None:
        """Back to ``saved`` (after ``setup``); with snapshots turned off since,
        there is nothing to restore."""
        if self.snapshots is not None:
            self.snapshots.restore(saved.snapshots)

    def set_epoch(self, epoch: int) -> None:
        """The epoch of the frames offered from now on (names live snapshots)."""
        if self.snapshots is not None:
            self.snapshots.epoch = epoch

    def expire(self, live: set[int]) -> None:
        """Write and forget the snapshots of tracks no longer ``live``."""
        if self.snapshots is not None:
            self.snapshots.expire(live)

    def annotated(
        self,
        message: Detected,
        tracked: Detections,
        pixels: np.ndarray,
        overlay: Overlay,
    ) -> Emit:
        """A tracked frame for the annotate stage, pixels inline (the ring slot is
        reused once this frame is acknowledged)."""
        frame = msgspec.structs.replace(message.frame, shm=None)
        header = Detected(
            frame,
            len(tracked),
            message.names,
            message.timings,
            tracked=True,
            pixels=True,
            overlay=overlay,
            masks=tracked.masks is not None,
            labels=message.labels if "label" in tracked.data else (),
        )
        # redaction already made a private copy; otherwise the slot's pixels must
        # be copied before the frame is acknowledged and the slot reused
        own = pixels if self.privacy is not None else pixels.copy()
        return Emit("annotate", header, [*tracked.to_parts(), own.data])

    def preview(
        self,
        message: Detected,
        parts: Sequence[Any],
        tracked: Detections,
        overlay: Callable[[], Overlay],
    ) -> tuple[Emit, ...]:
        """A preview of this frame when one is due (someone watches)."""
        tap = self.preview_tap
        if tap is None or not tap.due():
            return ()
        pixels = self._view(message, parts)
        if pixels is None:
            return ()
        return (tap.preview(message, pixels, tracked, overlay(), self._redactor()),)

    def _redactor(self) -> Callable[[np.ndarray, Detections], np.ndarray] | None:
        privacy = self.privacy
        if privacy is None:
            return None
        from stages.track.privacy import redact

        return lambda image, found: redact(image, found, self._private_classes, privacy)

    def stats(self) -> dict[str, int]:
        """Counters for the track stage's ``TrackStats``."""
        return {
            **self.counters,
            "snapshots_written": self.snapshots.written if self.snapshots else 0,
            "snapshots_failed": self.snapshots.failed if self.snapshots else 0,
            "snapshots_pruned": self.snapshots.pruned.files if self.snapshots else 0,
            "previews": self.preview_tap.made if self.preview_tap else 0,
        }

    def close(self) -> None:
        self.expire(set())
        self._reader.close()
