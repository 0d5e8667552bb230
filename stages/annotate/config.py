"""The annotate stage's settings, apart from its drawing code: every stage process
validates the whole config, and none but annotate should load OpenCV for it."""

from __future__ import annotations

from pydantic import Field, model_validator

from pipeline.configtypes import ConfigPath, StrictModel
from pipeline.retention import RetentionConfig


class AnnotateConfig(StrictModel):
    video: ConfigPath | None = Field(
        default=None,
        description="Annotated video (H.264): the name of its segments, each "
        "<stem>-<YYYYmmdd-HHMMSS>.mp4 beside it.",
    )
    segment_s: float = Field(
        default=600.0,
        ge=1,
        le=86400,
        description="Start a new video segment this often.",
    )
    retention: RetentionConfig = Field(
        default_factory=RetentionConfig,
        description="Oldest segments deleted by age or by their total size.",
    )
    http_port: int | None = Field(
        default=None, ge=1, le=65535, description="Serve MJPEG on this port."
    )
    http_host: str = Field(
        default="127.0.0.1",
        description="Address the MJPEG server binds (no authentication: keep it "
        "on loopback or behind a proxy).",
    )
    jpeg_quality: int = Field(default=80, ge=10, le=100, description="MJPEG quality.")
    trace_frames: int = Field(
        default=30, ge=0, le=1000, description="Track trace length in frames."
    )

    @model_validator(mode="after")
    def _has_output(self) -> AnnotateConfig:
        if self.video is None and self.http_port is None:
            raise ValueError("give video (an .mp4 path), http_port, or both")
        return self
