"""The preview tap: a small copy of a tracked frame, with its detections and
overlay scaled to it, for the API's live pictures of the camera.

Made only while the API says someone watches (``pipeline.demand``) and at most
``fps`` times a second, so an unwatched camera pays one ``stat`` twice a second.
The copy is taken at whatever size decode gave the frame (often already the
detector's small size), shrunk to the preview width, and redacted here when
privacy is on, so nothing private ever leaves this process.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

import msgspec
import numpy as np

from pipeline.demand import DemandProbe
from pipeline.detections import Detections
from pipeline.messages import Detected, Overlay, OverlayLine, OverlayZone
from pipeline.settings import PreviewConfig
from pipeline.stage import Emit

log = logging.getLogger(__name__)

Redactor = Callable[[np.ndarray, Detections], np.ndarray]


class PreviewTap:
    def __init__(self, config: PreviewConfig, probe: DemandProbe) -> None:
        self.config = config
        self.probe = probe
        self._next = 0.0
        self.made = 0

    def due(self) -> bool:
        """Whether this frame should be previewed: someone watches, and the
        last preview is at least 1/fps old."""
        if not self.probe.wanted():
            return False
        now = time.monotonic()
        if now < self._next:
            return False
        # from now, not from the last due time: a slow camera never bursts
        self._next = now + 1.0 / self.config.fps
        return True

    def preview(
        self,
        message: Detected,
        pixels: np.ndarray,
        tracked: Detections,
        overlay: Overlay,
        redact: Redactor | None,
    ) -> Emit:
        """The preview message: a frame of the preview's size, its pixels inline,
        detections (without masks) and overlay in its pixels."""
        import cv2

        frame = message.frame
        have_h, have_w = pixels.shape[:2]
        width = min(self.config.width, have_w)
        height = max(2, round(have_h * width / have_w) // 2 * 2)
        if (width, height) != (have_w, have_h):
            small = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA)
        else:
            small = pixels.copy()  # the ring slot is reused once the frame is acked
        sx, sy = width / frame.width, height / frame.height
        scaled = dataclasses.replace(
            tracked,
            xyxy=(tracked.xyxy * np.array([sx, sy, sx, sy], np.float32)).astype(
                np.float32
            ),
            masks=None,
        )
        if redact is not None:
            small = redact(small, scaled)
        header = Detected(
            msgspec.structs.replace(
                frame, width=width, height=height, shm=None, pixel_size=None
            ),
            len(scaled),
            message.names,
            message.timings,
            tracked=True,
            pixels=True,
            overlay=_scaled(overlay, sx, sy),
            labels=message.labels if "label" in scaled.data else (),
        )
        self.made += 1
        return Emit("preview", header, [*scaled.to_parts(), small.data])


def _scaled(overlay: Overlay, sx: float, sy: float) -> Overlay:
    def point(p: tuple[float, float]) -> tuple[float, float]:
        return (p[0] * sx, p[1] * sy)

    return Overlay(
        lines=tuple(
            OverlayLine(
                line.name,
                point(line.start),
                point(line.end),
                line.count_in,
                line.count_out,
            )
            for line in overlay.lines
        ),
        zones=tuple(
            OverlayZone(
                zone.name, tuple(point(p) for p in zone.polygon), zone.count, zone.crowd
            )
            for zone in overlay.zones
        ),
    )
