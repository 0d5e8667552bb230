"""A clip muxed from buffered packets: copied into MP4, never re-encoded.

The packets keep their own presentation times, so a frame of the clip is found
by the pts its event names. Where the times step back (a looped file starting
again, a restarted camera) the rest of the clip is shifted to run on, as a
muxer needs rising decode times. Written beside its final name and renamed, so
a clip either is whole or is not there.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

from stages.record.annexb import AnnexB
from stages.record.buffer import Stored, StreamHeader

TICKS = 90_000
TIME_BASE = Fraction(1, TICKS)


def write_clip(header: StreamHeader, packets: list[Stored], path: Path) -> float:
    """Muxes ``packets`` into ``path``; returns the clip's span in seconds.

    Raises:
        ValueError: the packets cannot make a clip (no keyframe first, a codec
            the muxer refuses, bad extradata).
        OSError: the clip could not be written.
    """
    import av

    if not packets or not packets[0].keyframe:
        raise ValueError("a clip must start at a keyframe")
    rewrite = AnnexB(header.codec, header.extradata)
    step = 1.0 / header.fps if header.fps > 0 else 0.04
    part = path.with_name(path.name + ".part")
    first = last = None
    try:
        with av.open(str(part), "w", format="mp4") as output:
            stream = output.add_mux_stream(
                header.codec, width=header.width, height=header.height
            )
            stream.time_base = TIME_BASE
            offset, last_dts = 0.0, None
            for record in packets:
                dts = _first_of(record.dts, record.pts, record.capture_ts)
                pts = _first_of(record.pts, dts)
                if last_dts is not None and dts + offset <= last_dts:
                    offset = last_dts + step - dts  # the stream's times started over
                dts_ticks = round((dts + offset) * TICKS)
                pts_ticks = max(round((pts + offset) * TICKS), dts_ticks)
                last_dts = dts + offset
                packet = av.Packet(rewrite.packet(record.payload, record.keyframe))
                packet.stream = stream
                packet.time_base = TIME_BASE
                packet.dts, packet.pts = dts_ticks, pts_ticks
                packet.is_keyframe = record.keyframe
                output.mux(packet)
                first = pts + offset if first is None else min(first, pts + offset)
                last = pts + offset if last is None else max(last, pts + offset)
        os.replace(part, path)
    except av.error.FFmpegError as e:
        part.unlink(missing_ok=True)
        raise ValueError(f"{header.codec} packets could not be muxed: {e}") from e
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    assert first is not None and last is not None
    return last - first + step


def _first_of(*values: float | None) -> float:
    return next(v for v in values if v is not None)
