"""What the decode stage reports in its heartbeats."""

from __future__ import annotations

import msgspec


class DecodeStats(msgspec.Struct, kw_only=True):
    frames: int = 0  # sent on (the next sequence number)
    in_flight: int = 0  # sent and not yet acknowledged
    window: int = 0  # how many may be in flight now
    resent: int = 0
    frame_age_out_p50_s: float = 0.0
    frame_age_out_p99_s: float = 0.0
    decode_errors: int = 0
    skipped_to_keyframe: int = 0
    frames_dropped_behind: int = 0  # live: oldest frames dropped to keep up
    frames_dropped_gap: int = 0  # live: rest of a GOP after lost packets
    frames_skipped_resume: int = 0  # decoded again after a restart, not sent
    motion_frames_gated: int = 0
