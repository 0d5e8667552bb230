"""The decode stage's config: sampling, resize, the motion gate, threads and the
delivery window (``cameras.<name>.decode``)."""

from __future__ import annotations

from pydantic import Field

from pipeline.configtypes import FrameSide, StrictModel
from stages.detect.config import MotionConfig


class DecodeConfig(StrictModel):
    every_nth: int = Field(
        default=1, ge=1, le=10_000, description="Keep every Nth frame."
    )
    target_fps: float | None = Field(
        default=None,
        gt=0,
        le=1000,
        description="Keep frames at about this rate (after every_nth).",
    )
    resize: tuple[FrameSide, FrameSide] | None = Field(
        default=None, description="Scale frames to [width, height] before they travel."
    )
    scale_to_model: bool = Field(
        default=True,
        description="When the detector is the only reader of this camera's pixels "
        "(no snapshots, annotation or crop classifier), scale frames in decode "
        "straight to the size the detector letterboxes them to: a smaller "
        "conversion, copy and shared-memory slot per frame. Rules and detections "
        "stay in the camera's pixels either way.",
    )
    motion: MotionConfig | None = Field(
        default=None,
        description="Motion gate: detect only frames where something moves.",
    )
    threads: int = Field(
        default=1,
        ge=0,
        le=64,
        description="Decoder and colour-conversion threads (0: auto).",
    )
    window: int = Field(
        default=8, ge=1, le=256, description="Frames in flight before decode waits."
    )
    live_window: int = Field(
        default=8,
        ge=1,
        le=256,
        description="Most frames in flight from a live source; the window adapts "
        "below this to keep frame age under live_max_age_s.",
    )
    live_max_age_s: float = Field(
        default=0.6,
        gt=0,
        le=60,
        description="Target frame age for a live source (keeps p99 under 1 s). "
        "Every frame in flight waits for the ones ahead of it, so while frames come "
        "back older than this the window shrinks by one, and while they come back "
        "in under half of it, it grows again.",
    )
    resend_after_s: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="Re-send unacknowledged frames after this silence.",
    )
    shared_memory: bool = Field(
        default=True, description="Pass pixels in shared memory on ipc:// links."
    )
