"""The line rule: directional crossings of a segment (see ``base`` for the
geometry conventions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

import msgspec
import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator

from pipeline.detections import Detections
from pipeline.eventkinds import EventKindSpec, HomeAssistantEntity, StateTopic
from pipeline.messages import Event, Frame, OverlayLine
from stages.track.rules.base import Rule, RuleConfig, RuleContext
from stages.track.rules.geometry import Point


class LineRuleConfig(RuleConfig):
    kind: Literal["line"] = Field(description="Directional line crossing count.")
    start: Point = Field(description="Line start [x, y] in source pixels.")
    end: Point = Field(description="Line end [x, y] in source pixels.")
    band_px: float = Field(
        default=2.0,
        ge=0,
        le=10_000,
        description="Hysteresis band around the line, pixels.",
    )
    confirm_frames: int = Field(
        default=3,
        ge=1,
        le=100,
        description="Frames an object must stay on the new side before it counts.",
    )

    @model_validator(mode="after")
    def _has_length(self) -> LineRuleConfig:
        if np.hypot(self.end[0] - self.start[0], self.end[1] - self.start[1]) < 1:
            raise ValueError("line start and end are the same point; give two points")
        return self

    def points(self) -> list[tuple[float, float]]:
        return [self.start, self.end]


class LineCrossingData(msgspec.Struct, frozen=True):
    """The line's running totals, this crossing included."""

    total_in: Annotated[int, msgspec.Meta(ge=0, description="Crossings in so far.")]
    total_out: Annotated[int, msgspec.Meta(ge=0, description="Crossings out so far.")]


def _total(direction: str) -> StateTopic:
    """The retained running total of one direction, a Home Assistant counter."""

    def value(event: Event) -> str | None:
        total = event.data.get(f"total_{direction}")
        return None if total is None else str(total)

    return StateTopic(
        f"{{rule}}/{direction}",
        value,
        HomeAssistantEntity(
            "sensor",
            f"{{rule}} {direction}",
            {
                "state_class": "total_increasing",
                "unit_of_measurement": "objects",
                "icon": "mdi:counter",
            },
        ),
    )


LINE_CROSSING = EventKindSpec(
    "line_crossing",
    LineCrossingData,
    "A tracked object crossed the line (direction: in or out).",
    value="1: one crossing.",
    tracked=True,
    directions=("in", "out"),
    states=(_total("in"), _total("out")),
    report="count",
)


@dataclass(frozen=True, slots=True)
class Crossing:
    track_id: int
    class_id: int
    direction: Literal["in", "out"]


class TrackSide(msgspec.Struct, array_like=True, gc=False):
    """Where one track stands relative to the line."""

    side: int  # +1 right of the line, -1 left
    distance: float  # signed distance of the last point on ``side``
    along: float  # its position along the segment (0 at start, 1 at end)
    seen: float  # frame time it was last seen
    pending: int = 0  # consecutive frames seen on the other side
    cross_along: float = 0.0  # where the path met the line when it went over


@dataclass
class LineCounter:
    """State of one line rule: each track's confirmed side.

    A track changes side only after ``confirm_frames`` consecutive frames beyond the
    band on the other side, so a box whose anchor wobbles over the line in a crowd
    (occlusion, pose) is not counted again and again.
    """

    start: npt.NDArray[np.float64]
    end: npt.NDArray[np.float64]
    band_px: float
    confirm_frames: int = 1
    tracks: dict[int, TrackSide] = field(default_factory=dict)

    def update(
        self,
        anchors: npt.NDArray[np.float32],
        track_ids: npt.NDArray[np.int64],
        class_ids: npt.NDArray[np.int32],
        now: float,
    ) -> list[Crossing]:
        """Feed one frame's tracked anchors (``now``: frame time, seconds); returns
        the crossings it completed."""
        direction = self.end - self.start
        length = float(np.hypot(*direction))
        rel = anchors.astype(np.float64) - self.start
        distance = (direction[0] * rel[:, 1] - direction[1] * rel[:, 0]) / length
        along = (rel @ direction) / (length * length)
        crossings: list[Crossing] = []
        for i, track_id in enumerate(track_ids.tolist()):
            d, t = float(distance[i]), float(along[i])
            side = 1 if d > self.band_px else -1 if d < -self.band_px else 0
            state = self.tracks.get(track_id)
            if state is None:
                if side:
                    self.tracks[track_id] = TrackSide(side, d, t, now)
                continue
            state.seen = now
            if side == 0:
                continue
            if side == state.side:
                state.distance, state.along, state.pending = d, t, 0
                continue
            if (
                state.pending == 0
            ):  # first frame over: where did the path meet the line?
                state.cross_along = state.along + (t - state.along) * state.distance / (
                    state.distance - d
                )
            state.pending += 1
            if state.pending < self.confirm_frames:
                continue
            if 0.0 <= state.cross_along <= 1.0:
                crossings.append(
                    Crossing(track_id, int(class_ids[i]), "in" if side > 0 else "out")
                )
            self.tracks[track_id] = TrackSide(side, d, t, now)
        return crossings

    def forget(self, older_than: float) -> None:
        """Drop the state of tracks last seen before ``older_than`` (frame time);
        tracker ids are never reused, so this only bounds memory."""
        for track_id in [k for k, v in self.tracks.items() if v.seen < older_than]:
            del self.tracks[track_id]


class LineState(msgspec.Struct, frozen=True):
    """Each track's confirmed side (the running totals are the engine's)."""

    tracks: dict[int, TrackSide]


class LineRule(Rule):
    """Counts crossings per direction; every crossing is an event carrying the
    line's running totals."""

    config_type = LineRuleConfig
    state_type = LineState
    events = (LINE_CROSSING,)

    def __init__(self, config: LineRuleConfig, lost_track_s: float) -> None:
        super().__init__(config, lost_track_s)
        self.counter = LineCounter(
            np.array(config.start, np.float64),
            np.array(config.end, np.float64),
            config.band_px,
            config.confirm_frames,
        )

    def evaluate(
        self,
        context: RuleContext,
        frame: Frame,
        subset: Detections,
        anchors: npt.NDArray[np.float32],
        ids: npt.NDArray[np.int64],
    ) -> list[Event]:
        rule = self.config
        events = []
        for crossing in self.counter.update(anchors, ids, subset.class_id, frame.pts):
            name = context.names[crossing.class_id]
            direction = crossing.direction
            context.count(f"{rule.name}/{name}/{direction}")
            context.totals[(rule.name, direction)] += 1
            if context.aggregate is not None:
                context.aggregate.add_crossing(rule.name, direction, name)
            events.append(
                context.event(
                    frame,
                    rule,
                    "line_crossing",
                    LineCrossingData(
                        context.totals[(rule.name, "in")],
                        context.totals[(rule.name, "out")],
                    ),
                    track_id=crossing.track_id,
                    class_id=crossing.class_id,
                    direction=direction,
                    value=1.0,
                )
            )
        return events

    def snapshot(self) -> LineState:
        return LineState(self.counter.tracks)

    def restore(self, saved: LineState) -> None:
        self.counter.tracks = dict(saved.tracks)

    def end_tracks(self, context: RuleContext, frame: Frame) -> list[Event]:
        self.counter.tracks.clear()
        return []

    def forget(self, older_than: float) -> None:
        self.counter.forget(older_than=older_than)

    def overlay(self, context: RuleContext) -> OverlayLine:
        rule = self.config
        return OverlayLine(
            name=rule.name,
            start=tuple(rule.start),
            end=tuple(rule.end),
            count_in=context.totals[(rule.name, "in")],
            count_out=context.totals[(rule.name, "out")],
        )
