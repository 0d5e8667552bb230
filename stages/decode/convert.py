"""What decode does to each decoded frame: sampling (every Nth, a target rate) and
conversion to BGR pixels at the configured size."""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.messages import Packet
from pipeline.transport import Buffer

if TYPE_CHECKING:
    from stages.detect.config import MotionConfig
    from stages.detect.motion import MotionGate

MICROS = Fraction(1, 1_000_000)


class Sampler:
    """Which decoded frames travel on: every ``every_nth``, at most
    ``target_fps``, by the frames' own times."""

    def __init__(self, every_nth: int, target_fps: float | None) -> None:
        self.every_nth = every_nth
        self.target_fps = target_fps
        self.decoded = 0
        self._next_keep_pts: float | None = None

    def keep(self, frame: Any, stream_fps: float) -> bool:
        index = self.decoded
        self.decoded += 1
        if index % self.every_nth:
            return False
        pts = float(frame.pts * MICROS) if frame.pts is not None else index / stream_fps
        if self.target_fps is not None:
            if self._next_keep_pts is not None and pts < self._next_keep_pts - 1e-6:
                return False
            step = 1.0 / self.target_fps
            base = pts if self._next_keep_pts is None else self._next_keep_pts
            self._next_keep_pts = max(base + step, pts)
        return True

    def fps(self, stream_fps: float) -> float:
        """The rate of the frames kept."""
        fps = stream_fps / self.every_nth
        if self.target_fps is not None:
            fps = min(fps, self.target_fps)
        return fps


class BgrConverter:
    """Decoded frames to BGR arrays of the configured size."""

    def __init__(self, resize: tuple[int, int] | None, threads: int) -> None:
        self.resize = resize
        self.threads = threads
        self._reformatter: Any = None  # av's VideoReformatter, kept between frames

    def pixels(self, frame: Any) -> Any:
        width, height = self.resize or (frame.width, frame.height)
        if self._reformatter is None:
            from av.video.reformatter import VideoReformatter

            # One for the stream: frame.to_ndarray(format=...) builds a scaler and
            # its thread pool per frame and frees them again, which was a third of
            # this process's time in a crowd at 20 fps.
            self._reformatter = VideoReformatter()
        return self._reformatter.reformat(
            frame, width=width, height=height, format="bgr24", threads=self.threads
        ).to_ndarray()


def raw_frame(packet: Packet, payload: Buffer) -> Any:
    """A raw BGR packet (USB) as a frame like a decoder's."""
    import av

    pixels = np.frombuffer(payload, np.uint8).reshape(packet.height, packet.width, 3)
    frame = av.VideoFrame.from_ndarray(pixels, format="bgr24")
    frame.pts = round((packet.pts or 0.0) * 1e6)
    frame.time_base = MICROS
    return frame


def motion_gate(config: MotionConfig | None) -> MotionGate | None:
    """The camera's motion gate, if it has one; OpenCV is loaded only then."""
    if config is None:
        return None
    from stages.detect.motion import MotionGate

    return MotionGate(config)
