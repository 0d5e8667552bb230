"""What the decode stage reports in its heartbeats."""

from __future__ import annotations

import msgspec

# the stats a decode stage counts as it goes
COUNTERS = (
    "decode_errors",
    "frames_damaged",  # decoded with errors concealed (FFmpeg's corrupt flag)
    "skipped_to_keyframe",
    "frames_dropped_behind",
    "frames_dropped_gap",
    "frames_skipped_resume",
)


class DecodeStats(msgspec.Struct, kw_only=True):
    frames: int = 0  # sent on (the next sequence number)
    in_flight: int = 0  # sent and not yet acknowledged
    window: int = 0  # how many may be in flight now
    resent: int = 0
    frame_age_out_p50_s: float = 0.0
    frame_age_out_p99_s: float = 0.0
    decode_errors: int = 0
    frames_damaged: int = 0
    problem: str = ""  # the decode errors, for the line at the end of the run
    skipped_to_keyframe: int = 0
    frames_dropped_behind: int = 0  # live: oldest frames dropped to keep up
    frames_dropped_gap: int = 0  # live: rest of a GOP after lost packets
    frames_skipped_resume: int = 0  # decoded again after a restart, not sent
    motion_frames_gated: int = 0


def decode_problem(counters: dict[str, int], first_error: str, live: bool) -> str:
    """The damage a file's decoder met, for the line at the end of the run (a
    live stream's errors are counted, but pass with the stream)."""
    if live:
        return ""
    said = []
    if counters["decode_errors"]:
        said.append(f"{counters['decode_errors']} decode errors (first, {first_error})")
    if counters["frames_damaged"]:
        said.append(f"{counters['frames_damaged']} frames decoded with damage")
    return ", ".join(said)
