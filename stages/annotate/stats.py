"""What the annotate stage reports in its heartbeats."""

from __future__ import annotations

import msgspec


class AnnotateStats(msgspec.Struct, kw_only=True):
    frames: int = 0
    published: int = 0  # MJPEG frames sent to viewers
    video_frames: int = 0
    segments_pruned: int = 0  # deleted by retention
