"""Checks that a received header agrees with the payload that came with it.

A header can be valid msgspec and still lie: a frame of 450×800×3 with ten bytes of
pixels, a side of a million pixels, detections counted 50 with columns for 2. A
stage that believed it would crash on a reshape or allocate without bound, so
``transport.receive`` checks every message here and a lie becomes a
``MessageError``: the message is dropped and counted, the stage goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pipeline.errors import MessageError
from pipeline.messages import Detected, Frame, Message, Packet

# the largest frame side any stage accepts (the config's bound on sizes, too)
MAX_FRAME_SIDE = 16384
MAX_PACKET_BYTES = 64 << 20  # one compressed packet: far above any camera's
MAX_DETECTIONS = 100_000  # per frame; detect's max_det is bounded below it


def _frame(frame: Frame) -> None:
    height, width, _ = frame.pixel_shape
    for w, h in ((frame.width, frame.height), (width, height)):
        if not (1 <= w <= MAX_FRAME_SIDE and 1 <= h <= MAX_FRAME_SIDE):
            raise MessageError(
                f"frame of {frame.stream_id} is {w}×{h}: sides "
                f"must be 1–{MAX_FRAME_SIDE}"
            )


def _size(what: str, part: memoryview, expected: int) -> None:
    if part.nbytes != expected:
        raise MessageError(
            f"{what} has {part.nbytes} bytes where the header says {expected}"
        )


def _pixels_inline(frame: Frame, parts: Sequence[memoryview], at: int) -> None:
    if len(parts) <= at:
        raise MessageError(f"frame of {frame.stream_id} came without its pixels")
    height, width, channels = frame.pixel_shape
    _size(f"frame of {frame.stream_id}", parts[at], width * height * channels)


def check_payload(
    message: Message, parts: Sequence[memoryview], network: bool = False
) -> None:
    """Raise ``MessageError`` when ``parts`` cannot be what ``message`` says;
    ``network``: it came over tcp://, where no frame can be in shared memory."""
    if isinstance(message, Frame):
        _frame(message)
        if message.shm is not None and network:
            raise MessageError(f"a shared-memory frame of {message.stream_id} on tcp")
        if message.shm is None:  # else the ring checks the slot's own size
            _pixels_inline(message, parts, 0)
    elif isinstance(message, Detected):
        _frame(message.frame)
        count = message.count
        if not 0 <= count <= MAX_DETECTIONS:
            raise MessageError(
                f"{count} detections in one frame: at most {MAX_DETECTIONS}"
            )
        if count:
            columns = (16, 4, 4, 8) if message.tracked else (16, 4, 4)
            if len(parts) < len(columns):
                raise MessageError(f"{count} detections came without their columns")
            for i, width in enumerate(columns):
                _size(f"detection column {i}", parts[i], count * width)
        if message.pixels:
            _pixels_inline(message.frame, parts, len(parts) - 1)
    elif isinstance(message, Packet):
        if not parts or parts[0].nbytes > MAX_PACKET_BYTES:
            raise MessageError(
                f"packet of {message.stream_id}: missing, or over "
                f"{MAX_PACKET_BYTES} bytes"
            )


def stream_of(message: Message) -> str | None:
    """The stream a message belongs to (None: a message of no one stream)."""
    if isinstance(message, Detected):
        return message.frame.stream_id
    stream = getattr(message, "stream_id", None)
    return stream if isinstance(stream, str) else None


def check_stream(
    message: Message, port: str, serves_on: Callable[[str, str], bool]
) -> None:
    """Raise ``MessageError`` for a message of a stream the stage does not serve
    on the ``port`` it arrived at (``Stage.serves_on``)."""
    stream = stream_of(message)
    if stream is not None and not serves_on(port, stream):
        raise MessageError(f"a message of stream {stream[:64]!r}, not served here")
