"""The track stage's tracker, privacy and snapshot settings, apart from the code
that tracks and draws: every stage process validates the whole config, and none
but the track process should load the tracker's solver or an image library for
it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.configtypes import ConfigPath, StrictModel
from pipeline.retention import RetentionConfig


class PrivacyConfig(StrictModel):
    classes: list[str] = Field(
        default=["person"], min_length=1, description="Class names hidden."
    )
    method: Literal["blur", "pixelate", "fill"] = Field(
        default="blur", description="How they are hidden."
    )
    strength: int = Field(
        default=8,
        ge=2,
        le=64,
        description="Blur radius or pixel block as a fraction of the object: "
        "its size divided by this.",
    )
    margin: float = Field(
        default=0.05,
        ge=0,
        le=0.5,
        description="Boxes (detection models) grow by this share on each side.",
    )


class SnapshotConfig(StrictModel):
    directory: ConfigPath = Field(description="Folder for <camera>/<track>.jpg files.")
    margin: float = Field(
        default=0.1, ge=0, le=1, description="Border added around the box (fraction)."
    )
    quality: int = Field(default=90, ge=10, le=100, description="JPEG quality.")
    min_size_px: int = Field(
        default=16, ge=1, le=4096, description="Smaller boxes are not snapshotted."
    )
    retention: RetentionConfig = Field(
        default_factory=RetentionConfig,
        description="Oldest snapshots deleted by age or by each camera's total size.",
    )


class TrackerConfig(StrictModel):
    kind: Literal["bytetrack"] = Field(
        default="bytetrack", description="Tracker algorithm."
    )
    lost_track_s: float = Field(
        default=1.0, gt=0, le=3600, description="Keep a lost track this many seconds."
    )
    activation_threshold: float = Field(
        default=0.25, gt=0, lt=1, description="Minimum confidence that starts a track."
    )
    high_confidence: float = Field(
        default=0.5, gt=0, lt=1, description="First-stage association threshold."
    )
    min_consecutive_frames: int = Field(
        default=2, ge=1, le=1000, description="Frames before a new track gets an id."
    )
    match_iou: float = Field(
        default=0.1, gt=0, lt=1, description="Minimum IoU to match."
    )
