"""What the track stage reports in its heartbeats."""

from __future__ import annotations

import msgspec

from pipeline.metrics import HistogramReport


class TrackStats(msgspec.Struct, kw_only=True):
    frames: int = 0
    next_seq: int = 0  # every message before it is applied and acknowledged
    fps: float = 0.0
    events_emitted: int = 0
    duplicates: int = 0  # re-sent frames already applied
    out_of_order: int = 0  # frames ahead of a gap, left for the re-send
    stale: int = 0  # frames of an older epoch (a live decode that was restarted)
    restored_from: int = -1  # the frame the checkpoint this process resumed at
    checkpoints: int = 0  # written
    checkpoint_bytes: int = 0  # the last one's size
    checkpoint_bytes_written: int = 0
    outbox: int = 0  # messages not yet stored by every sink
    resent_to_sinks: int = 0  # sent again to a restarted sink
    reloads: int = 0
    camera_online: int = 0
    camera_offline: int = 0
    frames_without_pixels: int = 0
    snapshots_written: int = 0
    snapshots_failed: int = 0
    snapshots_pruned: int = 0  # deleted by retention
    previews: int = 0  # small copies for the API's live pictures (while watched)
    frame_width: int = 0  # the camera's frame size: the space rules are drawn in
    frame_height: int = 0
    frame_age_p50_s: float = 0.0
    frame_age_p99_s: float = 0.0
    latency: HistogramReport | None = None
    counts: dict[str, int] = {}  # rule/class/direction or rule/event kind
