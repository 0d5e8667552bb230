"""Capture: owns the connection to a source and sends compressed packets on.

File sources demux with PyAV and apply backpressure (the runtime blocks on a full
downstream queue), so a file run drops nothing and is deterministic. With
``realtime: true`` a file is paced at its own frame rate, like a live camera.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec
from pydantic import Field, field_validator

from pipeline.clock import Clock, WallClock
from pipeline.configtypes import EnvPath, StrictModel
from pipeline.errors import UnreadableSourceError
from pipeline.log import redact
from pipeline.messages import EndOfStream, Packet
from pipeline.stage import Emit, Received, Stage
from stages.capture.stats import FileCaptureStats

log = logging.getLogger(__name__)

# demux errors in a row after which a damaged file is read no further
MAX_READ_ERRORS = 16
CONNECT_WAIT_S = 5.0
"""The first packet waits this long at most for the consumers to connect."""
# a jump in the timestamps of more frame times than this is reported: packets lost
# to damage (or a recorder that paused)
GAP_FRAMES = 5
TS_PACKET = 188  # bytes; an MPEG-TS file is a whole number of them


class FileSourceConfig(StrictModel):
    kind: Literal["file"] = Field(description="A video file read with PyAV.")
    path: EnvPath = Field(description="Video file path; may use ${ENV}.")
    realtime: bool = Field(
        default=False,
        description="Pace packets at the file's frame rate, like a camera.",
    )
    loop: bool = Field(
        default=False, description="Start over at the end (demos, soak)."
    )
    live: bool = Field(
        default=False,
        description="Play it as a camera would (implies realtime): when the chain "
        "falls behind, frames are dropped and counted instead of waited for.",
    )

    @field_validator("path")
    @classmethod
    def _exists(cls, value: str) -> str:
        if not Path(value).is_file():
            raise ValueError(f"video file {value} does not exist; check the path")
        return value


class CaptureStage(Stage):
    """Reads one source and emits ``Packet`` messages, then ``EndOfStream``."""

    def __init__(
        self,
        stream_id: str,
        source: FileSourceConfig,
        clock: Clock | None = None,
        record: bool = False,
    ) -> None:
        """``record``: each packet also goes to the recorder (``record`` port)."""
        self.stream_id = stream_id
        self.record = record
        self._ready: Callable[[str], bool] | None = None
        self._connect_deadline: float | None = None
        self._sent = False
        self.source = source
        self.clock = clock or WallClock()
        self._packets: Iterator[tuple[Packet, bytes, float | None]] | None = None
        self._pending: tuple[Packet, bytes, float | None] | None = None
        self._done = False
        self._ended = False
        self._seq = 0
        self._start_wall = 0.0
        self._start_due: float | None = None
        self._total_frames = -1
        self._container: Any = None
        self._read_errors = 0
        self._cut_short = ""  # how the file says it ends early
        self._gaps = self._frames_skipped = 0  # timestamp jumps in the stream
        self._first_error = ""  # where and what, for the end-of-run line

    def setup(self) -> None:
        import av

        name = redact(self.source.path)
        try:
            self._container = av.open(self.source.path, "r")
        except (av.error.FFmpegError, OSError, MemoryError) as e:
            raise UnreadableSourceError(
                f"cannot open {name}: {e}; check that it is a whole video file"
            ) from e
        video = self._container.streams.video
        if self._container.format.name.endswith("_pipe"):  # png_pipe, jpeg_pipe
            raise UnreadableSourceError(
                f"{name} is a still image ({self._container.format.name}), not a "
                "video; give a video file or a camera"
            )
        if not video or video[0].codec_context is None or not video[0].width:
            raise UnreadableSourceError(
                f"{name} has no video stream that can be decoded (damaged header, "
                "or a codec this build lacks); check the file with ffprobe"
            )
        stream = video[0]
        self._total_frames = int(stream.frames or -1)
        self._packets = self._read(stream)

    def _demux(self, stream: Any) -> Iterator[Any]:
        """The stream's packets, going on past damage: each demux error is
        counted and the read resumes where the demuxer resynchronises, until
        ``MAX_READ_ERRORS`` in a row say that nothing more can be read."""
        import av

        in_a_row = 0
        while in_a_row < MAX_READ_ERRORS:
            try:
                for packet in self._container.demux(stream):
                    in_a_row = 0
                    yield packet
                return
            except (av.error.FFmpegError, OSError, MemoryError) as e:
                self._read_errors += 1
                in_a_row += 1
                self._first_error = self._first_error or (
                    f"after packet {self._seq}: {redact(str(e))}"
                )
                log.warning("read error in %s: %s", self.stream_id, redact(str(e)))

    def _read(self, stream: Any) -> Iterator[tuple[Packet, bytes, float | None]]:
        """Packets in file (decode) order, each with the time it is due when the
        file plays like a camera: its DTS, continued across loops, so an encoder's
        steady output rate is what the chain sees (PTS order would burst around
        B-frames)."""
        ctx = stream.codec_context
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        extradata = bytes(ctx.extradata) if ctx.extradata else None
        offset = 0.0  # added to the due times of each loop after the first
        while True:
            first_raw = last_raw = None
            for packet in self._demux(stream):
                if packet.size == 0:  # demuxer flush packet
                    continue
                pts = (
                    float(packet.pts * packet.time_base)
                    if packet.pts is not None
                    else None
                )
                stamp = packet.dts if packet.dts is not None else packet.pts
                due = None
                if stamp is not None:
                    raw = float(stamp * packet.time_base)
                    if last_raw is not None and raw - last_raw > GAP_FRAMES / fps:
                        self._gaps += 1
                        self._frames_skipped += round((raw - last_raw) * fps) - 1
                    last_raw = raw
                    first_raw = last_raw if first_raw is None else first_raw
                    due = last_raw + offset
                message = Packet(
                    stream_id=self.stream_id,
                    seq=self._seq,
                    capture_ts=self.clock.now(),
                    pts=pts,
                    keyframe=bool(packet.is_keyframe),
                    codec=ctx.name,
                    width=ctx.width,
                    height=ctx.height,
                    fps=fps,
                    total_frames=self._total_frames,
                    extradata=extradata if packet.is_keyframe else None,
                    live=self.source.live,
                    dts=float(packet.dts * packet.time_base)
                    if packet.dts is not None
                    else None,
                )
                self._seq += 1
                yield message, bytes(packet), due
            if not self.source.loop or self._seq == 0:
                self._cut_short = self._shortfall(stream, last_raw, fps)
                return
            self._container.seek(0)
            if first_raw is not None and last_raw is not None:
                offset += last_raw - first_raw + 1 / fps

    def _shortfall(self, stream: Any, last_s: float | None, fps: float) -> str:
        """How the file says it was cut short, if it does: fewer packets than its
        index lists, an end before the duration in its header, or (MPEG-TS) a
        last packet cut in two. A file cut at a packet boundary with no index or
        duration cannot be told from a shorter recording."""
        if self._total_frames > 0 and self._seq < self._total_frames:
            return f"its index lists {self._total_frames} frames"
        declared = self._container.duration  # µs, from the header (None: unknown)
        start = float(stream.start_time * stream.time_base) if stream.start_time else 0
        if declared and last_s is not None:
            missing = start + declared / 1e6 - (last_s + 1 / fps)
            if missing > max(0.5, 2 / fps):
                return f"it ends {missing:.1f}s before the duration in its header"
        size = os.path.getsize(self.source.path)
        if self._container.format.name == "mpegts" and size % TS_PACKET:
            return "its last MPEG-TS packet is cut in two"
        return ""

    def _wait_s(self, due_s: float | None) -> float:
        """Seconds until a realtime-paced packet is due (0: send now)."""
        if not (self.source.realtime or self.source.live) or due_s is None:
            return 0.0
        if self._start_due is None:
            self._start_due, self._start_wall = due_s, self.clock.monotonic()
        due = self._start_wall + due_s - self._start_due
        return max(0.0, due - self.clock.monotonic())

    def outputs_ready(self, ready: Callable[[str], bool]) -> None:
        self._ready = ready

    def _connecting(self) -> bool:
        """Whether to hold the first packet: a consumer has not connected yet
        (decode, the recorder), for at most ``CONNECT_WAIT_S``. A file has all
        its packets at once; a camera's first ones would be dropped at a
        queue nobody reads yet, and with them the first keyframe."""
        if self._sent or self._ready is None:
            return False
        if self._connect_deadline is None:
            self._connect_deadline = time.monotonic() + CONNECT_WAIT_S
        ports = ("packets", "record") if self.record else ("packets",)
        waiting = not all(self._ready(port) for port in ports)
        return waiting and time.monotonic() < self._connect_deadline

    def next_awake(self) -> float | None:
        if self._pending is None:
            return None
        if not self._sent:
            return 0.05
        return self._wait_s(self._pending[2])

    def produce(self) -> Iterable[Emit]:
        if self._done or self._packets is None:
            return ()
        pending = self._pending
        if pending is None:
            try:
                pending = next(self._packets)
            except StopIteration:
                if self._seq == 0:
                    raise UnreadableSourceError(
                        f"no video packet could be read from "
                        f"{redact(self.source.path)}"
                        + (f" ({self._first_error})" if self._first_error else "")
                        + "; check that it is a whole video file"
                    ) from None
                return self._end("error" if self._read_errors else "eof")
        if self._connecting() or self._wait_s(pending[2]) > 0:
            self._pending = pending
            return ()
        self._pending = None
        self._sent = True
        packet, payload, _ = pending
        # captured when it leaves, as a camera's packet would be
        packet = msgspec.structs.replace(packet, capture_ts=self.clock.now())
        if self.record:
            return (
                Emit("packets", packet, (payload,)),
                Emit("record", packet, (payload,)),
            )
        return (Emit("packets", packet, (payload,)),)

    def _end(self, reason: str) -> Sequence[Emit]:
        self._done = True
        return (
            Emit("packets", EndOfStream(self.stream_id, self._seq, reason, self._seq)),
        )

    def process(self, batch: Sequence[Received]) -> Iterable[Emit]:
        return ()

    def stop(self) -> Iterable[Emit]:
        return () if self._done else self._end("stopped")

    def finished(self) -> bool:
        return self._done

    def stats(self) -> FileCaptureStats:
        said = []
        if self._read_errors:
            said.append(
                f"{self._read_errors} read errors, {self._seq} packets read (first "
                f"error {self._first_error})"
            )
        if self._gaps:
            said.append(
                f"about {self._frames_skipped} frames missing (its timestamps "
                f"jump {self._gaps}x)"
            )
        if self._cut_short:
            said.append(f"cut short after {self._seq} packets ({self._cut_short})")
        name = redact(self.source.path)
        problem = f"{name} is damaged: {', '.join(said)}" if said else ""
        return FileCaptureStats(
            packets=self._seq,
            total_frames=self._total_frames,
            read_errors=self._read_errors,
            problem=problem,
        )

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
