"""What decode does to each decoded frame: sampling (every Nth, a target rate),
conversion to BGR pixels at the configured size, and the motion gate."""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stages.detect.config import MotionConfig
    from stages.detect.letterbox import ModelInput
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
    """Decoded frames to BGR arrays: at the configured ``resize``, else at the size
    the detector letterboxes them to when ``model`` is given (nothing else reads
    this camera's pixels, so scaling the decoder's YUV and converting the small
    picture replace the full-size conversion and the detector's resize), else at
    the frame's own size."""

    def __init__(
        self,
        resize: tuple[int, int] | None,
        threads: int,
        model: ModelInput | None = None,
    ) -> None:
        self.resize = resize
        self.threads = threads
        self.model = None if resize else model
        self._reformatter: Any = None  # av's VideoReformatters, kept between frames
        self._scaler: Any = None
        self._scaled: dict[tuple[int, int], tuple[int, int]] = {}

    def size(self, frame: Any) -> tuple[int, int]:
        """The (width, height) of ``frame``'s pixels as they travel."""
        if self.resize:
            return self.resize
        source = (frame.width, frame.height)
        if self.model is None:
            return source
        size = self._scaled.get(source)
        if size is None:
            box = self.model.fit(frame.height, frame.width)
            # only ever smaller: a frame the detector enlarges travels as it is
            size = (box.new_w, box.new_h) if box.new_w < frame.width else source
            self._scaled[source] = size
        return size

    def frame_size(self, frame: Any) -> tuple[int, int]:
        """The (width, height) detections and rules are in: the configured size,
        else the camera's, also when the pixels travel smaller."""
        return self.resize or (frame.width, frame.height)

    def pixel_size(self, frame: Any) -> tuple[int, int] | None:
        """The pixels' (width, height) when they travel smaller than
        ``frame_size`` (a message's ``pixel_size``), else None."""
        size = self.size(frame)
        return size if size != self.frame_size(frame) else None

    def pixels(self, frame: Any) -> Any:
        width, height = self.size(frame)
        if self._reformatter is None:
            from av.video.reformatter import VideoReformatter

            # One per stream and step: frame.to_ndarray(format=...) builds a
            # scaler and its thread pool per frame and frees them again, which
            # was a third of this process's time in a crowd at 20 fps.
            self._reformatter = VideoReformatter()
            self._scaler = VideoReformatter()
        if (width, height) != (frame.width, frame.height):
            # Scaled in the decoder's own format first, then converted at the small
            # size: swscale's combined scale-and-convert path is the slower one
            # (`framechain bench pixels`: 0.64 against 0.80 ms a 1080p frame to
            # 640×360). Area averaging, unlike a bilinear tap, does not alias.
            frame = self._scaler.reformat(
                frame,
                width=width,
                height=height,
                interpolation="AREA",
                threads=self.threads,
            )
        return self._reformatter.reformat(
            frame, format="bgr24", threads=self.threads
        ).to_ndarray()


def motion_gate(config: MotionConfig | None) -> MotionGate | None:
    """The camera's motion gate, if it has one; OpenCV is loaded only then."""
    if config is None:
        return None
    from stages.detect.motion import MotionGate

    return MotionGate(config)
