"""Each camera's live picture for the API (latest.jpg, stream.mjpeg): the track
stage's small previews, drawn (``stages.annotate.drawing``) and JPEG-encoded
here as they arrive.

Previews arrive only while this service asks for them (``pipeline.demand``):
every request for a picture, and every open stream once a second, renews the
demand, so a camera nobody watches costs the chain nothing. A picture is drawn
once whatever the number of viewers. Previews are taken on the stage's thread
and served from uvicorn's event loop; each new picture wakes the waiting
requests through the loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.demand import Demand
from pipeline.detections import Detections
from pipeline.messages import Detected
from pipeline.settings import PreviewConfig
from stages.api.slots import ClientSlots

log = logging.getLogger(__name__)

TRACE_S = 3.0
"""How far back each track's trace reaches on the live picture."""


@dataclass(frozen=True, slots=True)
class Picture:
    jpeg: bytes
    seq: int  # per camera, from 1
    made: float  # monotonic


class LivePictures:
    def __init__(self, demand: Demand, config: PreviewConfig) -> None:
        self.demand = demand
        self.config = config
        self._pictures: dict[str, Picture] = {}
        self._painters: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.slots = ClientSlots(config.streams_per_client)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self.drawn = 0
        self.refused = 0

    # the stage's thread

    def offer(self, message: Detected, parts: Sequence[Any]) -> None:
        """Draws one preview and wakes whoever waits for the camera's picture."""
        import cv2

        from stages.annotate.drawing import Painter

        frame = message.frame
        camera = frame.stream_id
        try:
            pixels = np.frombuffer(parts[-1], np.uint8).reshape(frame.pixel_shape)
            detections = Detections.from_parts(
                message.count, parts, tracked=True, labels=bool(message.labels)
            )
        except (ValueError, TypeError, IndexError) as e:
            self.refused += 1
            log.warning("preview of %s refused: %s", camera, e)
            return
        painter = self._painters.get(camera)
        if painter is None:
            painter = Painter(max(2, round(TRACE_S * self.config.fps)), 0.4)
            self._painters[camera] = painter
        image = painter.draw(
            pixels, detections, message.names, message.overlay, message.labels
        )
        ok, jpeg = cv2.imencode(
            ".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality]
        )
        if not ok:
            return
        with self._lock:
            previous = self._pictures.get(camera)
            seq = previous.seq + 1 if previous is not None else 1
            self._pictures[camera] = Picture(jpeg.tobytes(), seq, time.monotonic())
            loop = self._loop
        self.drawn += 1
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake)

    # uvicorn's event loop

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def want(self, camera: str) -> None:
        """Someone wants this camera's pictures (for the next few seconds)."""
        with self._lock:
            self.demand.ask(camera)

    def latest(self, camera: str) -> Picture | None:
        with self._lock:
            return self._pictures.get(camera)

    async def newer(self, camera: str, seq: int, timeout: float) -> Picture | None:
        """The camera's picture once it is newer than ``seq``; None after
        ``timeout`` seconds without one."""
        self._loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        while True:
            picture = self.latest(camera)
            if picture is not None and picture.seq > seq:
                return picture
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if self._changed is None:
                self._changed = asyncio.Event()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                return None
