"""Motion gating: run the detector only on frames where something moves.

Like Frigate's motion gate, and what lets one box carry many quiet security cameras:
decode compares a small grey copy of each frame with a running-average background;
a frame counts as moving when enough of it (``min_area``) differs by more than
``pixel_threshold`` grey levels. Detect skips frames that neither move nor follow
movement closely and hands track the camera's last detections instead, so objects
standing still stay tracked and an empty scene stays empty.

The gate opens for every frame with motion and for ``hangover_frames`` after it, so
an object's last steps and its leaving are detected; it also opens at least every
``refresh_s`` (lighting drifts, a parked car finally detected) and on the first
frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from stages.detect.config import MotionConfig


@dataclass
class MotionGate:
    config: MotionConfig
    _background: npt.NDArray[np.float32] | None = None
    _quiet_frames: int = 0
    _last_open: float | None = None
    frames: int = 0
    opened: int = 0

    @property
    def gated(self) -> int:
        """Frames the gate kept from detection."""
        return self.frames - self.opened

    def area(self, pixels: npt.NDArray[np.uint8]) -> float:
        """Fraction of the frame that moved against the background (1.0 at first)."""
        height, width = pixels.shape[:2]
        small_w = min(self.config.width, width)
        small_h = max(1, round(height * small_w / width))
        grey = cv2.cvtColor(
            cv2.resize(pixels, (small_w, small_h), interpolation=cv2.INTER_AREA),
            cv2.COLOR_BGR2GRAY,
        )
        grey = cv2.GaussianBlur(grey, (3, 3), 0)
        if self._background is None or self._background.shape != grey.shape:
            self._background = grey.astype(np.float32)
            return 1.0
        diff = cv2.absdiff(grey, cv2.convertScaleAbs(self._background))
        changed = float(np.count_nonzero(diff > self.config.pixel_threshold))
        cv2.accumulateWeighted(grey, self._background, self.config.background_rate)
        return changed / diff.size

    def update(self, pixels: npt.NDArray[np.uint8], pts: float) -> bool:
        """Whether this frame should be detected."""
        self.frames += 1
        moving = self.area(pixels) >= self.config.min_area
        self._quiet_frames = 0 if moving else self._quiet_frames + 1
        due = self._last_open is None or pts - self._last_open >= self.config.refresh_s
        open_ = moving or self._quiet_frames <= self.config.hangover_frames or due
        if open_:
            self._last_open = pts
            self.opened += 1
        return open_
