"""The rolling buffer of one camera's stream: its packets, copied as capture sent
them (never decoded or re-encoded), in segment files of a few seconds under
``<clips>/<camera>/.buffer``, so that a clip can reach back before its event and
a restarted recorder still has what it had.

A segment starts at a keyframe, with the stream's parameters in its first
record, and holds length-prefixed msgpack records. A packet lost on the way (a
gap in capture's numbering, a restarted capture) ends the segment: the next one
starts at the next keyframe, so every segment decodes on its own. A record torn
by a kill is where reading that file stops.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import msgspec

from pipeline.messages import Packet

log = logging.getLogger(__name__)

SEGMENT_S = 4.0
"""A new segment at the first keyframe this long after the segment began."""
LENGTH = struct.Struct("<I")
SUFFIX = ".seg"


class StreamHeader(msgspec.Struct, frozen=True, array_like=True):
    """What a muxer must know of the stream besides its packets."""

    codec: str
    width: int
    height: int
    fps: float
    extradata: bytes | None


class Stored(msgspec.Struct, frozen=True, array_like=True):
    capture_ts: float
    pts: float | None
    dts: float | None
    keyframe: bool
    payload: bytes


_encode = msgspec.msgpack.Encoder().encode
_header = msgspec.msgpack.Decoder(StreamHeader).decode
_record = msgspec.msgpack.Decoder(Stored).decode


@dataclass
class Segment:
    path: Path
    header: StreamHeader
    first_ts: float
    last_ts: float
    keyframes: list[float] = field(default_factory=list)  # their capture times


def read_segment(path: Path) -> tuple[StreamHeader, list[Stored]]:
    """A segment's header and records, up to a torn one.

    Raises:
        ValueError: not a segment (no header).
    """
    data = path.read_bytes()
    records: list[Stored] = []
    header: StreamHeader | None = None
    at = 0
    while at + LENGTH.size <= len(data):
        (size,) = LENGTH.unpack_from(data, at)
        body = data[at + LENGTH.size : at + LENGTH.size + size]
        if len(body) < size:
            break
        at += LENGTH.size + size
        try:
            if header is None:
                header = _header(body)
            else:
                records.append(_record(body))
        except msgspec.DecodeError:
            break
    if header is None:
        raise ValueError(f"{path.name} is not a buffer segment")
    return header, records


SLACK_S = 2.0
"""Capture times against stream times: the window's segments are chosen this
much wider."""
RUN_BREAK_S = 5.0
"""Times stepping this far past an event's: another run of the stream's times."""


def _due(record: Stored) -> float | None:
    """When a packet is due in the stream's time: its decode time, else its pts."""
    return record.dts if record.dts is not None else record.pts


def _anchor(records: list[Stored], at_ts: float, pts: float) -> int | None:
    """The index of the event's packet: the one of its pts captured nearest
    ``at_ts``; else the last captured by then."""
    best: tuple[float, int] | None = None
    for i, r in enumerate(records):
        if r.pts is not None and abs(r.pts - pts) < 1e-4:
            distance = abs(r.capture_ts - at_ts)
            if best is None or distance < best[0]:
                best = (distance, i)
    if best is not None and best[0] < 10:
        return best[1]
    before = [i for i, r in enumerate(records) if r.capture_ts <= at_ts]
    return before[-1] if before else None


class CameraBuffer:
    """One camera's segments: written as packets come, read to cut clips,
    trimmed to the last ``keep_s`` seconds."""

    def __init__(self, folder: Path, keep_s: float) -> None:
        self.folder = folder
        self.keep_s = keep_s
        self.segments: list[Segment] = []
        self._file: BinaryIO | None = None
        self._next_seq: int | None = None
        self._header: StreamHeader | None = None
        self._waiting_for_keyframe = True
        self.newest_ts = 0.0  # capture time of the newest packet kept
        self.packets = 0
        self.gaps = 0
        self.skipped = 0  # packets before the first keyframe after a gap

    def load(self) -> None:
        """The segments a previous recorder left (a restart keeps the buffer)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.folder.glob(f"*{SUFFIX}")):
            try:
                header, records = read_segment(path)
            except (OSError, ValueError):
                path.unlink(missing_ok=True)
                continue
            if not records:
                path.unlink(missing_ok=True)
                continue
            segment = Segment(
                path, header, records[0].capture_ts, records[-1].capture_ts
            )
            segment.keyframes = [r.capture_ts for r in records if r.keyframe]
            self.segments.append(segment)
            self.newest_ts = max(self.newest_ts, segment.last_ts)

    def add(self, packet: Packet, payload: bytes) -> None:
        if self._next_seq is not None and packet.seq != self._next_seq:
            self.gaps += 1
            self._close()
            self._waiting_for_keyframe = True
        self._next_seq = packet.seq + 1
        if packet.keyframe:
            self._keyframe(packet)
        elif self._waiting_for_keyframe:
            self.skipped += 1
            return
        assert self._file is not None
        record = _encode(
            Stored(packet.capture_ts, packet.pts, packet.dts, packet.keyframe, payload)
        )
        self._file.write(LENGTH.pack(len(record)) + record)
        segment = self.segments[-1]
        segment.last_ts = packet.capture_ts
        if packet.keyframe:
            segment.keyframes.append(packet.capture_ts)
        self.newest_ts = packet.capture_ts
        self.packets += 1

    def _keyframe(self, packet: Packet) -> None:
        """Starts a segment here when none is open, the stream's parameters
        changed, or the open one is ``SEGMENT_S`` long."""
        header = StreamHeader(
            packet.codec,
            packet.width,
            packet.height,
            packet.fps,
            packet.extradata
            if packet.extradata is not None
            else (self._header.extradata if self._header is not None else None),
        )
        current = self.segments[-1] if self._file is not None else None
        if (
            current is None
            or header != current.header
            or packet.capture_ts - current.first_ts >= SEGMENT_S
        ):
            self._close()
            path = self.folder / f"{round(packet.capture_ts * 1000)}-{os.getpid()}"
            path = path.with_suffix(SUFFIX)
            self._file = path.open("ab")
            body = _encode(header)
            self._file.write(LENGTH.pack(len(body)) + body)
            self.segments.append(Segment(path, header, packet.capture_ts, 0.0))
        self._header = header
        self._waiting_for_keyframe = False

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def window(
        self, at_ts: float, pts: float, pre_s: float, post_s: float
    ) -> tuple[StreamHeader, list[Stored]] | None:
        """The packets of an event's clip: the event is the frame of ``pts``
        captured at ``at_ts``; the clip runs from the last keyframe at or
        before ``pts - pre_s`` (the first keyframe there is, when the buffer or
        the stream's run of times begins later) to the last packet due by
        ``pts + post_s``. Times are the stream's own, not capture times, so a
        clip is cut where its frames are; capture times only find the event's
        packet. None when the buffer holds nothing of it."""
        self.flush()
        # segments start at keyframes: from the last one begun before the
        # window (capture and stream times differ by a little) to the window's end
        start_ts, end_ts = at_ts - pre_s - SLACK_S, at_ts + post_s + SLACK_S
        first = max(
            (i for i, s in enumerate(self.segments) if s.first_ts <= start_ts),
            default=0,
        )
        chosen = [s for s in self.segments[first:] if s.first_ts <= end_ts]
        records: list[Stored] = []
        header: StreamHeader | None = None
        for segment in chosen:
            if header is not None and segment.header != header:
                if records and records[-1].capture_ts >= at_ts:
                    break  # the stream changed after the event: the clip ends
                records = []  # ... or before it: the clip starts after
            header = segment.header
            try:
                records += read_segment(segment.path)[1]
            except (OSError, ValueError) as e:
                log.warning("buffer segment %s unreadable: %s", segment.path, e)
        if header is None or not records:
            return None
        anchor = _anchor(records, at_ts, pts)
        if anchor is None:
            return None
        start = None
        for i in range(anchor, -1, -1):
            r = records[i]
            if r.pts is not None and r.pts > pts + RUN_BREAK_S:
                break  # an earlier run of the stream's times (a loop, a restart)
            if r.keyframe:
                start = i
                if r.pts is None or r.pts <= pts - pre_s:
                    break
        if start is None:
            return None
        end = anchor
        for i in range(anchor + 1, len(records)):
            due = _due(records[i])
            if due is None or due > pts + post_s or due < pts - RUN_BREAK_S:
                break
            end = i
        return header, records[start : end + 1]

    def trim(self, keep_from_ts: float) -> None:
        """Deletes the closed segments that end before ``keep_from_ts`` and
        before the last ``keep_s`` seconds."""
        limit = min(keep_from_ts, self.newest_ts - self.keep_s)
        open_path = self.segments[-1].path if self._file is not None else None
        kept = []
        for segment in self.segments:
            if segment.last_ts < limit and segment.path != open_path:
                segment.path.unlink(missing_ok=True)
            else:
                kept.append(segment)
        self.segments = kept

    def close(self) -> None:
        self._close()
