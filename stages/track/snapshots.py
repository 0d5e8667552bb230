"""Snapshots: the best-confidence crop of every track, as a JPEG per track.

The best crop so far is kept in memory (a small copy) and written only when an event
of that track needs its path, or when the track ends, so a track whose confidence
climbs frame after frame costs one copy per improvement and one file write per event.
The path of a track's snapshot never changes (``<directory>/<camera>/<track>.jpg``);
a later, better crop replaces the file atomically.

Snapshots are best effort: a full or read-only disk is logged and counted, and the
event is still delivered, with an empty ``snapshot`` field. ``retention`` deletes
the oldest snapshots (an older event's ``snapshot`` then names a file that is gone).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.retention import Pacer, Pruned, prune_files
from stages.track.config import SnapshotConfig
from stages.track.taps import SnapshotState

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Best:
    confidence: float
    crop: npt.NDArray[np.uint8] | None  # None once written
    path: str = ""
    epoch: int = 0
    # restored from a checkpoint without its crop: the next crop of the track
    # is taken whatever its confidence, and the name is kept
    lost: bool = False


class SnapshotStore:
    def __init__(self, config: SnapshotConfig, camera: str) -> None:
        self.config = config
        self.folder = Path(config.directory) / camera
        self._best: dict[int, _Best] = {}
        self.epoch = 0  # of the frames offered now: part of a live source's names
        self.written = 0
        self.failed = 0
        self.pruned = Pruned()
        self._pacer = Pacer()
        # bytes under the folder as of the last prune, plus those written since;
        # unknown at the start (earlier runs' files), so the first write prunes
        self._bytes = 0 if config.retention.max_bytes is None else 1 << 62

    def offer(
        self,
        pixels: npt.NDArray[np.uint8],
        xyxy: npt.NDArray[np.float32],
        confidence: npt.NDArray[np.float32],
        track_ids: npt.NDArray[np.int64],
    ) -> None:
        """Keep each track's crop from this frame where it beats the best so far."""
        height, width = pixels.shape[:2]
        margin = self.config.margin
        for box, conf, track_id in zip(
            xyxy.tolist(), confidence.tolist(), track_ids.tolist(), strict=True
        ):
            best = self._best.get(track_id)
            if best is not None and best.confidence >= conf and not best.lost:
                continue
            x1, y1, x2, y2 = box
            if min(x2 - x1, y2 - y1) < self.config.min_size_px:
                continue
            dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
            left, top = max(0, int(x1 - dx)), max(0, int(y1 - dy))
            right, bottom = min(width, int(x2 + dx)), min(height, int(y2 + dy))
            crop = pixels[top:bottom, left:right].copy()
            path = best.path if best is not None else ""
            epoch = best.epoch if best is not None else self.epoch
            self._best[track_id] = _Best(conf, crop, path, epoch)

    def path(self, track_id: int) -> str:
        """The track's snapshot file, written now if a better crop is pending; ""
        when the track has none or it cannot be written."""
        best = self._best.get(track_id)
        if best is None:
            return ""
        if best.crop is not None:
            self._write(track_id, best)
        elif best.lost:
            return str(self._target(track_id, best))  # written when seen again
        return best.path

    def state(self) -> dict[int, SnapshotState]:
        """What a checkpoint keeps of each track's best crop: not the pixels
        (tens of kB a track, at every checkpoint), only whether one was pending."""
        return {
            track_id: SnapshotState(
                b.confidence, b.path, b.epoch, b.crop is not None or b.lost
            )
            for track_id, b in self._best.items()
        }

    def restore(self, state: dict[int, SnapshotState]) -> None:
        self._best = {
            track_id: _Best(s.confidence, None, s.path, s.epoch, lost=s.pending)
            for track_id, s in state.items()
        }

    def expire(self, live: set[int]) -> None:
        """Write and forget the tracks that are no longer ``live``."""
        for track_id in [t for t in self._best if t not in live]:
            best = self._best.pop(track_id)
            if best.crop is not None:
                self._write(track_id, best)

    def _write(self, track_id: int, best: _Best) -> None:
        assert best.crop is not None
        target = self._target(track_id, best)
        temporary = target.with_suffix(".jpg.tmp")
        try:
            ok, data = cv2.imencode(
                ".jpg", best.crop, [cv2.IMWRITE_JPEG_QUALITY, self.config.quality]
            )
            if not ok:
                raise OSError("JPEG encoding failed")
            self.folder.mkdir(parents=True, exist_ok=True)
            temporary.write_bytes(data.tobytes())
            os.replace(temporary, target)
        except OSError as e:
            self.failed += 1
            if self.failed == 1 or self.failed % 100 == 0:
                log.warning(
                    "snapshot not written (%d so far): %s; is %s writable and "
                    "not full?",
                    self.failed,
                    e,
                    self.folder,
                )
            return
        best.crop, best.path, best.lost = None, str(target), False
        self.written += 1
        self._bytes += len(data)  # a size limit holds between timed prunes too
        limits = self.config.retention
        over = limits.max_bytes is not None and self._bytes > limits.max_bytes
        if over or (limits.max_age_s and self._pacer.due()):
            self._bytes = prune_files(self.folder.glob("*.jpg"), limits, self.pruned)

    def _target(self, track_id: int, best: _Best) -> Path:
        # a live source's track ids start again in every run: its names carry the
        # epoch, so no run overwrites an earlier one's snapshot
        name = f"{best.epoch}-{track_id}" if best.epoch else str(track_id)
        return self.folder / f"{name}.jpg"
