"""The track stage's privacy and snapshot settings, apart from the code that draws
with OpenCV: every stage process validates the whole config, and none but the
ones that draw should load an image library for it."""

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
