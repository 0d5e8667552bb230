"""What the recorder reports in its heartbeats."""

from __future__ import annotations

import msgspec


class RecordStats(msgspec.Struct, kw_only=True):
    packets: int = 0  # kept in the buffers
    gaps: int = 0  # packets lost on the way (the buffer waits for a keyframe)
    skipped: int = 0  # packets dropped while waiting for that keyframe
    clips_written: int = 0
    clips_missed: int = 0  # events whose video the buffer no longer had
    clips_failed: int = 0  # could not be muxed or written
    clips_pending: int = 0  # waiting for their post-roll
    clips_pruned: int = 0  # deleted by retention
