"""``framechain replay``: run a camera's track stage (tracker, rules, aggregates) on a
recording of what it received, without capture, decode or a detector.

The recorded messages are fed in the order they arrived, re-sends included, so the
events are exactly those of the recorded run (the tests hold it to that); a rules
change can be tried on yesterday's traffic in seconds, and tracking and rules can be
benchmarked without the detector's cost.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import FramechainError
from pipeline.messages import Detected, EndOfStream, Event, StreamStatus
from pipeline.recording import replay
from pipeline.stage import Received


def replay_events(
    loaded: Any, camera: str | None, recording: Path, stats: dict[str, Any]
) -> Iterator[Event]:
    """The events the camera's track stage produces from ``recording``; ``stats``
    is filled with frames, events and seconds spent tracking.

    Raises:
        FramechainError: unknown camera, or an unreadable recording.
    """
    from stages.track.stage import TrackStage

    cameras = loaded.config.cameras
    if camera is None:
        if len(cameras) != 1:
            raise FramechainError(
                f"the config has {len(cameras)} cameras; choose one with --camera"
            )
        camera = next(iter(cameras))
    if camera not in cameras:
        raise FramechainError(
            f"no camera {camera!r} in the config; it has {', '.join(cameras)}"
        )
    cam = cameras[camera]
    stage = TrackStage(
        camera,
        loaded.config.tracker,
        cam.rules,
        aggregate_s=cam.aggregate_s,
        kinds=loaded.registry.implementations("rule"),
    )
    stage.setup()
    frames = events = 0
    busy = 0.0
    try:
        for message, parts in replay(recording):
            if not isinstance(message, Detected | EndOfStream | StreamStatus):
                continue
            stream = (
                message.frame.stream_id
                if isinstance(message, Detected)
                else message.stream_id
            )
            if stream != camera:
                continue
            frames += isinstance(message, Detected)
            started = time.perf_counter()
            emits = list(stage.process([Received("detections", message, parts)]))
            busy += time.perf_counter() - started
            for emit in emits:
                if isinstance(emit.message, Event):
                    events += 1
                    yield emit.message
    finally:
        stage.close()
        stats.update(frames=frames, events=events, seconds=busy)
