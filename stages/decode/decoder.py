"""Compressed packets of one stream to decoded frames, each with the time its
packet was captured: the codec (opened at a keyframe, opened again when the
stream's parameters change), live sources' lost packets (the rest of the GOP is
dropped), a capture restarting on a file (packets it replays are skipped), and
damage (counted, logged, and costing only the frames it touches)."""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np

from pipeline.clock import Clock
from pipeline.messages import Packet
from pipeline.transport import Buffer
from stages.decode.convert import MICROS

log = logging.getLogger(__name__)

GapState = Literal["in_step", "to_keyframe"]
"""Live sources: ``to_keyframe`` after lost packets, until the next keyframe
(the decoder cannot continue mid-GOP)."""

Decoded = list[tuple[Any, float]]
"""Decoded frames (``av.VideoFrame``) with their capture times, in order."""


def open_codec(packet: Packet, threads: int) -> Any:
    """A decoder for the packet's codec and parameters (extradata)."""
    import av

    codec = av.CodecContext.create(packet.codec, "r")
    if packet.extradata:
        codec.extradata = packet.extradata
    codec.thread_count = threads
    codec.thread_type = "AUTO" if threads != 1 else "SLICE"
    return codec


def raw_frame(packet: Packet, payload: Buffer) -> Any:
    """A raw BGR packet (USB) as a frame like a decoder's."""
    import av

    pixels = np.frombuffer(payload, np.uint8).reshape(packet.height, packet.width, 3)
    frame = av.VideoFrame.from_ndarray(pixels, format="bgr24")
    frame.pts = round((packet.pts or 0.0) * 1e6)
    frame.time_base = MICROS
    return frame


class PacketDecoder:
    """One stream's packets in, its decoded frames out. ``counters`` are the
    decode stage's: this adds ``decode_errors``, ``skipped_to_keyframe`` and
    ``frames_dropped_gap``."""

    def __init__(
        self, stream_id: str, threads: int, counters: dict[str, int], clock: Clock
    ) -> None:
        self.stream_id = stream_id
        self.threads = threads
        self.counters = counters
        self.clock = clock
        self.fps = 0.0  # the stream's, from its packets
        self.first_error = ""  # where and what, for the end-of-run line
        self._codec: Any = None
        self._codec_key: tuple[str, bytes | None] | None = None
        self._last_seq = -1
        self._gap: GapState = "in_step"
        self._capture_ts: dict[int, float] = {}  # frame pts (µs) -> capture time

    def decode(self, packet: Packet, payload: Buffer) -> Decoded:
        import av

        if packet.seq <= self._last_seq:
            if not packet.live:
                return []  # capture restarted and replays packets we already decoded
            self._last_seq, self._codec = packet.seq - 1, None  # new session
        dropped = packet.live and self._after_gap(packet)
        self._last_seq = packet.seq
        self.fps = packet.fps or self.fps or 25.0
        if dropped:
            return []
        if packet.codec == "rawvideo":
            return [(raw_frame(packet, payload), packet.capture_ts)]
        if packet.keyframe and packet.extradata is not None:
            self._open(packet)
        if self._codec is None:
            if not packet.keyframe:
                self.counters["skipped_to_keyframe"] += 1
                return []
            self._open(packet)
        av_packet = av.Packet(bytes(payload))
        pts_us = round(
            (packet.pts if packet.pts is not None else packet.seq / self.fps) * 1e6
        )
        av_packet.pts = av_packet.dts = None if packet.pts is None else pts_us
        av_packet.time_base = MICROS
        self._capture_ts[pts_us] = packet.capture_ts
        if len(self._capture_ts) > 512:
            self._capture_ts.pop(next(iter(self._capture_ts)))
        try:
            return self._timed(self._codec.decode(av_packet))
        except av.error.FFmpegError as e:
            self._error(f"packet {packet.seq}", e)
            return []

    def drain(self) -> Decoded:
        """The frames the codec still holds (at the end, or before a new
        session)."""
        import av

        if self._codec is None:
            return []
        try:
            return self._timed(self._codec.decode(None))
        except av.error.FFmpegError as e:
            self._error("flush", e)
            return []

    def new_session(self, seq: int) -> Decoded:
        """A live source connected or failed (its status took place ``seq`` in
        the packet sequence): the frames decoded so far, then a new decoder at
        the next session's first keyframe."""
        frames = self.drain()
        self._codec, self._codec_key, self._gap = None, None, "in_step"
        self._last_seq = seq
        self._capture_ts.clear()
        return frames

    def _open(self, packet: Packet) -> None:
        key = (packet.codec, packet.extradata)
        if self._codec is None or key != self._codec_key:
            self._codec = open_codec(packet, self.threads)
            self._codec_key = key

    def _timed(self, frames: list[Any]) -> Decoded:
        return [
            (frame, self._capture_ts.pop(frame.pts, self.clock.now()))
            for frame in frames
        ]

    def _after_gap(self, packet: Packet) -> bool:
        """Live sources only: whether to skip this packet. After packets were lost
        (capture dropped them, or a new session began) the decoder cannot continue
        mid-GOP, so the rest of the GOP is dropped up to the next keyframe."""
        if packet.seq != self._last_seq + 1 and self._gap == "in_step":
            log.info(
                "%s lost packets: dropping until the next keyframe", self.stream_id
            )
            self._gap = "to_keyframe"
        if self._gap == "to_keyframe" and packet.keyframe:
            self._gap = "in_step"
        if self._gap == "to_keyframe":
            self.counters["frames_dropped_gap"] += 1
        return self._gap == "to_keyframe"

    def _error(self, where: str, error: Exception) -> None:
        """Damage costs the frames it touches, not the stream: counted and logged."""
        self.counters["decode_errors"] += 1
        self.first_error = self.first_error or f"{where}: {error}"
        log.warning("decode error in %s %s: %s", self.stream_id, where, error)
