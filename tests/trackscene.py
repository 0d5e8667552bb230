"""A small deterministic street for the track stage alone: people walking across a
counting line and through a zone, fed as ``Detected`` messages the way detect sends
them. Written against APIs that are older than the explicit state, so that
``tests/data/make_old_checkpoint.py`` can drive the code from before it too."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from pipeline.detections import Detections
from pipeline.messages import Detected, Event, Frame
from pipeline.stage import Received

WIDTH, HEIGHT, FPS = 400, 300, 10.0
FRAMES = 130
# (start x, start y, dx, dy per frame, first frame, confidence)
WALKERS = [
    (40, 10, 0.0, 4.0, 0, 0.9),
    (120, 280, 0.5, -3.0, 5, 0.8),
    (200, 20, -0.5, 3.5, 10, 0.45),
    (300, 30, 0.0, 5.0, 20, 0.7),
    (360, 290, -1.0, -4.0, 30, 0.85),
    (80, 40, 2.0, 2.0, 45, 0.6),
]


def rules() -> list[Any]:
    from stages.track.rules import CrowdRuleConfig, LineRuleConfig, ZoneRuleConfig

    return [
        LineRuleConfig(kind="line", name="door", start=(0, 150), end=(400, 150)),
        ZoneRuleConfig(
            kind="zone",
            name="left",
            polygon=[(0, 0), (200, 0), (200, 300), (0, 300)],
            loiter_s=2.0,
        ),
        CrowdRuleConfig(kind="crowd", name="busy", threshold=3, min_duration_s=0.5),
    ]


def detections(seq: int) -> Detections:
    boxes, scores = [], []
    for x, y, dx, dy, first, confidence in WALKERS:
        if seq < first:
            continue
        t = seq - first
        cx, bottom = x + dx * t, y + dy * t
        if not (0 <= cx <= WIDTH and 0 <= bottom <= HEIGHT):
            continue
        boxes.append([cx - 15, bottom - 50, cx + 15, bottom])
        scores.append(confidence)
    return Detections(
        np.array(boxes, np.float32).reshape(-1, 4),
        np.array(scores, np.float32),
        np.zeros(len(boxes), np.int32),
    )


def image(seq: int) -> np.ndarray:
    return np.full((HEIGHT, WIDTH, 3), (seq * 3) % 256, np.uint8)


def messages(seqs: Iterable[int], pixels: bool = False) -> Iterator[Received]:
    for seq in seqs:
        found = detections(seq)
        frame = Frame(
            "cam", seq, 1000.0 + seq / FPS, seq / FPS, WIDTH, HEIGHT, FPS, None
        )
        parts: list[Any] = list(found.to_parts())
        if pixels:
            parts.append(memoryview(image(seq)).cast("B"))
        message = Detected(frame, len(found), ("person", "car"), pixels=pixels)
        yield Received("detections", message, parts)


def drive(stage: Any, seqs: Sequence[int], pixels: bool = False) -> list[Event]:
    """Each frame as its own batch; the events the stage emitted."""
    events = []
    for received in messages(seqs, pixels):
        for emit in stage.process([received]):
            if isinstance(emit.message, Event):
                events.append(emit.message)
    return events
