"""Annotate: one process per camera that draws what the chain sees.

Boxes, labels with track ids, track traces (supervision's annotators), zones with
their occupancy and lines with their in/out counts, written to an MP4 file and/or
served as MJPEG for a browser. It is fed by the track stage over a lossy link: when
drawing or encoding falls behind, frames are dropped (counted by track as
``dropped.annotate``), never held up in the counting path.

The video is written as time-named segments (``<stem>-<YYYYmmdd-HHMMSS>.mp4``, a new
one every ``segment_s`` and at every start), never replacing an earlier run's, and
as fragmented MP4, so a segment cut short by a crash still plays up to its last
second.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.detections import Detections
from pipeline.errors import FramechainError, PermanentError
from pipeline.messages import Detected
from pipeline.retention import Pruned, RetentionConfig, prune_files
from pipeline.stage import Emit, Received, Stage
from stages.annotate.config import AnnotateConfig
from stages.annotate.stats import AnnotateStats

log = logging.getLogger(__name__)

# a step back in the frames' times longer than this is a new clock, not disorder
CLOCK_RESTART_MS = 1000


def segment_path(base: Path, started: float) -> Path:
    """A segment's file: the base name with its start time, never an existing one."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    path = base.with_name(f"{base.stem}-{stamp}{base.suffix or '.mp4'}")
    n = 1
    while path.exists():
        path = base.with_name(f"{base.stem}-{stamp}-{n}{base.suffix or '.mp4'}")
        n += 1
    return path


class SegmentedVideo:
    """Annotated frames into time-named MP4 segments of ``segment_s`` each."""

    def __init__(
        self, base: str, segment_s: float, retention: RetentionConfig | None = None
    ) -> None:
        self.base = Path(base)
        self.segment_s = segment_s
        self.writer: Mp4Writer | None = None
        self._opened = 0.0
        self.segments: list[Path] = []
        self.retention = retention or RetentionConfig()
        self.pruned = Pruned()

    @property
    def path(self) -> str:
        return self.writer.path if self.writer is not None else str(self.base)

    def write(self, image: np.ndarray, pts: float, fps: float) -> None:
        now = time.time()
        if self.writer is not None and now - self._opened >= self.segment_s:
            self.writer.close()
            self.writer = None
        if self.writer is None:
            # Pruned as each segment closes, before the next opens: the closed
            # ones then stay within the limit, never more than one segment over.
            self._prune()
            path = segment_path(self.base, now)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writer, self._opened = Mp4Writer(str(path)), now
            self.segments.append(path)
        self.writer.write(image, pts, fps)

    def _prune(self) -> None:
        limits = self.retention
        if limits.max_bytes or limits.max_age_s:
            # this camera's segments, of this run and earlier ones
            segments = self.base.parent.glob(f"{self.base.stem}-*{self.base.suffix}")
            prune_files(segments, limits, self.pruned)

    @property
    def frames(self) -> int:
        return self.writer.frames if self.writer is not None else 0

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Mp4Writer:
    """H.264 in fragmented MP4 with millisecond timestamps from the frames' own
    times, so dropped frames shorten nothing and the file plays at the source's
    pace."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._container: Any = None
        self._stream: Any = None
        self._last_ms = -1
        self._offset_ms = 0
        self._closed = False
        self.frames = 0

    def write(self, image: np.ndarray, pts: float, fps: float) -> None:
        import av

        if self._closed:
            return
        if self._container is None:
            # fragments: what was written before a kill still plays
            self._container = av.open(
                self.path,
                "w",
                format="mp4",
                options={"movflags": "frag_keyframe+empty_moov+default_base_moof"},
            )
            stream = self._container.add_stream("libx264", rate=round(fps) or 25)
            stream.width, stream.height = image.shape[1], image.shape[0]
            stream.pix_fmt = "yuv420p"
            stream.time_base = Fraction(1, 1000)
            # the encoder counts in ms too: at its default 1/fps two frames less
            # than a frame apart (a damaged stream's) got one timestamp, which
            # the muxer refused, ending the stage
            stream.codec_context.time_base = Fraction(1, 1000)
            stream.options = {"preset": "veryfast", "crf": "23"}
            self._stream = stream
        if (image.shape[1], image.shape[0]) != (
            self._stream.width,
            self._stream.height,
        ):
            image = cv2.resize(image, (self._stream.width, self._stream.height))
        ms = round(pts * 1000) + self._offset_ms
        if ms <= self._last_ms:
            if self._last_ms - ms > CLOCK_RESTART_MS:
                # the source restarted its clock (loop, reconnect): go on from here
                self._offset_ms += self._last_ms + 1 - ms
            # else out of order (a damaged stream's frames): right after the last
            ms = self._last_ms + 1
        self._last_ms = ms
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts, frame.time_base = ms, Fraction(1, 1000)
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        self._closed = True
        if self._container is None:
            return
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        self._container = None


class AnnotateStage(Stage):
    def __init__(self, stream_id: str, config: AnnotateConfig) -> None:
        self.stream_id = stream_id
        self.config = config
        self._writer: SegmentedVideo | None = None
        self._server: Any = None
        self._painter: Any = None
        self.counters: dict[str, int] = {"frames": 0, "published": 0}
        self._stopping = False

    def serves(self, stream_id: str) -> bool:
        return stream_id == self.stream_id

    def setup(self) -> None:
        from stages.annotate.drawing import Painter

        cfg = self.config
        self._painter = Painter(cfg.trace_frames)
        if cfg.video is not None:
            self._writer = SegmentedVideo(str(cfg.video), cfg.segment_s, cfg.retention)
        if cfg.http_port is not None:
            from stages.annotate.mjpeg import MjpegServer

            try:
                self._server = MjpegServer(cfg.http_host, cfg.http_port, self.stream_id)
            except OSError as e:
                # a restart would find the port as taken: the run fails now
                raise PermanentError(
                    f"annotate.http_port {cfg.http_port}: cannot listen on "
                    f"{cfg.http_host}: {e.strerror}; pick a free port"
                ) from e
            self._server.start()
            log.info(
                "annotated %s at http://%s:%d/",
                self.stream_id,
                cfg.http_host,
                cfg.http_port,
            )

    def process(self, batch: Sequence[Received]) -> Iterable[Emit]:
        for item in batch:
            message = item.message
            if not isinstance(message, Detected) or not message.pixels:
                continue
            frame = message.frame
            pixels = np.frombuffer(item.parts[-1], np.uint8).reshape(
                frame.height, frame.width, 3
            )
            detections = Detections.from_parts(
                message.count,
                item.parts,
                tracked=True,
                masks=message.masks,
                labels=bool(message.labels),
            )
            wants_jpeg = self._server is not None and self._server.latest.wanted
            if self._writer is None and not wants_jpeg:
                continue
            image = self._painter.draw(
                pixels, detections, message.names, message.overlay, message.labels
            )
            self.counters["frames"] += 1
            if self._writer is not None:
                try:
                    self._writer.write(image, frame.pts, frame.fps)
                except (OSError, ValueError) as e:
                    raise FramechainError(
                        f"cannot write annotated video {self._writer.path}: {e}"
                    ) from e
            if wants_jpeg:
                ok, jpeg = cv2.imencode(
                    ".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality]
                )
                if ok:
                    self._server.latest.publish(jpeg.tobytes())
                    self.counters["published"] += 1
        return ()

    def stop(self) -> Iterable[Emit]:
        """Nothing queued here is worth waiting for (the link is lossy)."""
        self._stopping = True
        return ()

    def finished(self) -> bool:
        return self._stopping

    def stats(self) -> AnnotateStats:
        video = self._writer.frames if self._writer is not None else 0
        pruned = self._writer.pruned.files if self._writer is not None else 0
        return AnnotateStats(
            **self.counters, video_frames=video, segments_pruned=pruned
        )

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._server is not None:
            self._server.close()
