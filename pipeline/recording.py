"""Stage-stream recordings: tap a link to a file, replay it later.

A recording holds the messages one stage received on one input, in order, exactly as
they crossed the link (header and binary parts), so a detector-free run of the stages
after the tap (tracking, rules, sinks) is deterministic and fast: regression tests of
tracking and rules, and benchmarks of everything but the detector.

File format (little-endian): the magic line ``FCREC1\\n``, then per message a u32
part count followed by each part as a u64 length and its bytes; part 0 is the msgpack
header of ``messages.py``. Pixels that travelled through shared memory are not in the
file (their reference is), so a recording of the detect → track link replays tracking
and rules, not snapshots or annotation.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import numpy as np

from pipeline.errors import FramechainError
from pipeline.messages import Message, decode, encode
from pipeline.transport import Buffer

MAGIC = b"FCREC1\n"
_COUNT = struct.Struct("<I")
_LENGTH = struct.Struct("<Q")
MAX_PARTS = 64


class Recorder:
    """Appends received messages to a recording file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            new = not path.exists() or path.stat().st_size == 0
            self._file: IO[bytes] = path.open("ab")
            if new:
                self._file.write(MAGIC)
        except OSError as e:
            raise FramechainError(f"cannot record to {path}: {e}") from e
        self.messages = 0

    def write(self, message: Message, parts: Sequence[Buffer]) -> None:
        frames = [encode(message), *parts]
        try:
            self._file.write(_COUNT.pack(len(frames)))
            for frame in frames:
                view = memoryview(frame).cast("B")
                self._file.write(_LENGTH.pack(view.nbytes))
                self._file.write(view)
        except OSError as e:
            raise FramechainError(
                f"cannot write the recording {self.path}: {e}; is the disk full?"
            ) from e
        self.messages += 1

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def replay(path: Path) -> Iterator[tuple[Message, list[bytes]]]:
    """The recorded messages, in order, with their binary parts.

    Raises:
        FramechainError: not a recording, or cut short (the last whole message is
            still returned before the error).
    """
    try:
        file = path.open("rb")
    except OSError as e:
        raise FramechainError(f"cannot open the recording {path}: {e}") from e
    with file:
        if file.read(len(MAGIC)) != MAGIC:
            raise FramechainError(f"{path} is not a framechain recording")
        while True:
            head = file.read(_COUNT.size)
            if not head:
                return
            (count,) = _COUNT.unpack(head) if len(head) == _COUNT.size else (0,)
            if not 0 < count <= MAX_PARTS:
                raise FramechainError(f"{path}: corrupt or cut short")
            frames = []
            for _ in range(count):
                raw = file.read(_LENGTH.size)
                if len(raw) != _LENGTH.size:
                    raise FramechainError(f"{path}: cut short")
                (length,) = _LENGTH.unpack(raw)
                data = file.read(length)
                if len(data) != length:
                    raise FramechainError(f"{path}: cut short")
                frames.append(data)
            yield decode(frames[0]), frames[1:]


Frames = list[tuple[np.ndarray, np.ndarray]]
"""Boxes (n, 4) and confidences (n,) of each frame, in frame order."""


def recorded_frames(recording: Path) -> tuple[Frames, float]:
    """The recorded detections (boxes, confidences) in frame order, each frame
    once (a re-sent frame is recorded twice), and the stream's fps."""
    from pipeline.detections import Detections
    from pipeline.messages import Detected

    by_seq: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    fps = 0.0
    for message, parts in replay(recording):
        if isinstance(message, Detected):
            fps = message.frame.fps
            detections = Detections.from_parts(message.count, parts)
            by_seq[message.frame.seq] = (detections.xyxy, detections.confidence)
    return [by_seq[seq] for seq in sorted(by_seq)], fps
