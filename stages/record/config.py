"""A camera's clip settings (``cameras.<name>.clips``), apart from the recorder:
every stage process validates the whole config, and only the recorder loads
PyAV for it."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from pydantic import Field

from pipeline.configtypes import ConfigPath, StrictModel
from pipeline.retention import RetentionConfig


class ClipConfig(StrictModel):
    directory: ConfigPath = Field(
        description="Folder for <camera>/<event>.mp4 clips, and the rolling buffer "
        "of the camera's stream they are cut from (<camera>/.buffer)."
    )
    pre_s: float = Field(
        default=5.0, ge=0, le=60, description="Seconds of video before the event."
    )
    post_s: float = Field(
        default=5.0, ge=0, le=60, description="Seconds of video after the event."
    )
    kinds: list[str] | None = Field(
        default=None,
        description="Event kinds that get a clip (default: every event of a track).",
    )
    retention: RetentionConfig = Field(
        default_factory=RetentionConfig,
        description="Oldest clips deleted by age or by the camera's total size.",
    )


def clip_path(directory: str | Path, camera: str, event_id: str) -> Path:
    """Where the clip of an event is, once it is whole (the recorder writes it,
    the API serves it)."""
    return Path(directory) / camera / f"{quote(event_id, safe='')}.mp4"


def wants_clip(clips: ClipConfig, kind: str, track_id: int) -> bool:
    """Whether an event of ``kind`` gets a clip under ``clips``."""
    return kind in clips.kinds if clips.kinds is not None else track_id >= 0
