"""The crowd rule: a threshold on the number of tracked objects in an area, with
time and level hysteresis (see ``base``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec
import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator

from pipeline.detections import Detections
from pipeline.eventkinds import EventKindSpec, HomeAssistantEntity, StateTopic
from pipeline.messages import Event, Frame, OverlayZone
from stages.track.rules.base import (
    Rule,
    RuleConfig,
    RuleContext,
    points_in_polygon,
)
from stages.track.rules.geometry import Polygon


class CrowdRuleConfig(RuleConfig):
    kind: Literal["crowd"] = Field(
        description="Crowd threshold on the number of tracked objects."
    )
    polygon: Polygon | None = Field(
        default=None,
        description="Area watched, [[x, y], ...]; the whole frame when omitted.",
    )

    def points(self) -> list[tuple[float, float]]:
        return list(self.polygon or [])

    threshold: int = Field(ge=1, le=100_000, description="Objects that make a crowd.")
    min_duration_s: float = Field(
        default=2.0,
        ge=0,
        le=86400,
        description="Seconds at or above threshold to start.",
    )
    clear_below: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="The crowd ends below this many objects (hysteresis); "
        "default: threshold.",
    )
    clear_duration_s: float | None = Field(
        default=None,
        ge=0,
        le=86400,
        description="Seconds below clear_below to end; default: min_duration_s.",
    )

    @model_validator(mode="after")
    def _levels(self) -> CrowdRuleConfig:
        if self.clear_below is not None and self.clear_below > self.threshold:
            raise ValueError(
                f"clear_below ({self.clear_below}) must not exceed threshold "
                f"({self.threshold})"
            )
        return self


class CrowdData(msgspec.Struct, frozen=True):
    """A crowd's period so far."""

    since_pts: Annotated[
        float,
        msgspec.Meta(description="Frame time the count first held past the level."),
    ]
    peak: Annotated[int, msgspec.Meta(ge=0, description="Most objects counted.")]
    duration_s: Annotated[
        float,
        msgspec.Meta(ge=0, description="crowd_end: how long the crowd lasted; 0."),
    ]


def _crowd(name: str, state: str, description: str) -> EventKindSpec:
    """crowd_start and crowd_end set one retained ON / OFF topic, shown as one
    Home Assistant occupancy binary sensor."""
    entity = HomeAssistantEntity(
        "binary_sensor",
        "{rule} crowd",
        {"device_class": "occupancy", "payload_on": "ON", "payload_off": "OFF"},
    )
    return EventKindSpec(
        name,
        CrowdData,
        description,
        value="Objects counted at the change.",
        states=(StateTopic("{rule}/crowd", lambda _event: state, entity),),
        report="span_start" if state == "ON" else "span_end",
    )


CROWD_EVENTS = (
    _crowd("crowd_start", "ON", "A crowd formed: the count held past threshold."),
    _crowd("crowd_end", "OFF", "A crowd cleared: the count held below clear_below."),
)


@dataclass(frozen=True, slots=True)
class CrowdChange:
    kind: Literal["crowd_start", "crowd_end"]
    at: float
    count: int
    peak: int
    duration_s: float


@dataclass
class CrowdMonitor:
    """A crowd threshold with time and level hysteresis (see the module notes)."""

    polygon: npt.NDArray[np.float64] | None
    threshold: int
    min_duration_s: float
    clear_below: int
    clear_duration_s: float
    active: bool = False
    started: float = 0.0
    peak: int = 0
    holding_since: float | None = None

    def update(
        self, anchors: npt.NDArray[np.float32], now: float
    ) -> CrowdChange | None:
        count = (
            len(anchors)
            if self.polygon is None
            else int(points_in_polygon(anchors, self.polygon).sum())
        )
        holding = count < self.clear_below if self.active else count >= self.threshold
        if not holding:
            self.holding_since = None
            if self.active:
                self.peak = max(self.peak, count)
            return None
        if self.holding_since is None:
            self.holding_since = now
        since = self.holding_since
        if self.active:
            if now - since < self.clear_duration_s:
                return None
            self.active, self.holding_since = False, None
            return CrowdChange(
                "crowd_end", since, count, self.peak, since - self.started
            )
        self.peak = max(self.peak if since != now else 0, count)
        if now - since < self.min_duration_s:
            return None
        self.active, self.started, self.holding_since = True, since, None
        return CrowdChange("crowd_start", since, count, self.peak, 0.0)


class CrowdState(msgspec.Struct, frozen=True):
    """Whether a crowd is on, since when and its peak, and since when the count
    has held on the other side of its level."""

    active: bool
    started: float
    peak: int
    holding_since: float | None


class CrowdRule(Rule):
    """An event when a crowd starts and when it ends."""

    config_type = CrowdRuleConfig
    state_type = CrowdState
    events = CROWD_EVENTS

    def __init__(self, config: CrowdRuleConfig, lost_track_s: float) -> None:
        super().__init__(config, lost_track_s)
        self.monitor = CrowdMonitor(
            None if config.polygon is None else np.array(config.polygon, np.float64),
            config.threshold,
            config.min_duration_s,
            config.clear_below or config.threshold,
            config.min_duration_s
            if config.clear_duration_s is None
            else config.clear_duration_s,
        )

    def evaluate(
        self,
        context: RuleContext,
        frame: Frame,
        subset: Detections,
        anchors: npt.NDArray[np.float32],
        ids: npt.NDArray[np.int64],
    ) -> list[Event]:
        change = self.monitor.update(anchors, frame.pts)
        if change is None:
            return []
        context.count(f"{self.config.name}/{change.kind}")
        return [
            context.event(
                frame,
                self.config,
                change.kind,
                CrowdData(
                    round(change.at, 3), change.peak, round(change.duration_s, 3)
                ),
                value=float(change.count),
            )
        ]

    def snapshot(self) -> CrowdState:
        m = self.monitor
        return CrowdState(m.active, m.started, m.peak, m.holding_since)

    def restore(self, saved: CrowdState) -> None:
        m = self.monitor
        m.active, m.started, m.peak = saved.active, saved.started, saved.peak
        m.holding_since = saved.holding_since

    def overlay(self, context: RuleContext) -> OverlayZone | None:
        rule = self.config
        if rule.polygon is None:
            return None
        return OverlayZone(
            name=rule.name,
            polygon=tuple(tuple(p) for p in rule.polygon),
            count=int(self.monitor.active),
            crowd=True,
        )
