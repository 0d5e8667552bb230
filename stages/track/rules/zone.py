"""The zone rule: occupancy per class, debounced enter and exit, dwell time and
loitering of each track (see ``base`` for the geometry conventions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import msgspec
import numpy as np
import numpy.typing as npt
from pydantic import Field

from pipeline.detections import Detections
from pipeline.masks import polygon_region
from pipeline.messages import Event, Frame, OverlayZone
from stages.track.rules.base import (
    Rule,
    RuleConfig,
    RuleContext,
    points_in_polygon,
)
from stages.track.rules.geometry import Polygon
from stages.track.rules.zone_events import (
    ZONE_EVENTS,
    LoiteringData,
    ZoneEnterData,
    ZoneExitData,
    ZoneOccupancyData,
)


class ZoneRuleConfig(RuleConfig):
    kind: Literal["zone"] = Field(
        description="Polygon zone: occupancy, enter/exit and dwell events."
    )
    polygon: Polygon = Field(
        description="Polygon vertices [[x, y], ...] in source pixels."
    )

    def points(self) -> list[tuple[float, float]]:
        return list(self.polygon)

    confirm_frames: int = Field(
        default=2,
        ge=1,
        le=100,
        description="Frames a track must stay inside (outside) before it enters "
        "(exits).",
    )
    loiter_s: float | None = Field(
        default=None,
        gt=0,
        le=86400,
        description="Emit a loitering event when a track stays this long.",
    )
    min_mask_overlap: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Segmentation models: an object is inside when at least this "
        "share of its mask lies in the polygon (instead of its anchor point), and "
        "occupancy events report the share of the zone that masks cover.",
    )


@dataclass
class ZoneCounter:
    """State of one zone rule: the last reported occupancy per class."""

    polygon: npt.NDArray[np.float64]
    last: dict[int, int] | None = None

    def update(
        self,
        anchors: npt.NDArray[np.float32],
        class_ids: npt.NDArray[np.int32],
        inside: npt.NDArray[np.bool_] | None = None,
    ) -> dict[int, int] | None:
        """Occupancy per class id for this frame, or None when unchanged.
        ``inside`` overrides the anchor test (mask-overlap zones)."""
        if inside is None:
            inside = points_in_polygon(anchors, self.polygon)
        ids, counts = np.unique(class_ids[inside], return_counts=True)
        occupancy = dict(zip(ids.tolist(), counts.tolist(), strict=True))
        if occupancy == self.last:
            return None
        self.last = occupancy
        return occupancy


@dataclass(frozen=True, slots=True)
class Visit:
    """A zone event of one track: ``kind`` is zone_enter, zone_exit or loitering;
    ``at`` the frame time it happened; ``dwell_s`` the time inside so far."""

    kind: Literal["zone_enter", "zone_exit", "loitering"]
    track_id: int
    class_id: int
    at: float
    dwell_s: float
    reason: str = ""


class Presence(msgspec.Struct, array_like=True, gc=False):
    """One track's confirmed state in a zone, and the frames against it."""

    class_id: int
    inside: bool  # confirmed state
    since: float  # when the confirmed state began
    seen: float
    pending: int = 0  # consecutive frames seen in the other state
    pending_since: float = 0.0
    loitered: bool = False


@dataclass
class ZoneVisits:
    """Per-track state of one zone: debounced enter and exit, dwell time, loitering.

    A track first seen inside enters after ``confirm_frames`` like any other; one
    not seen for ``lost_after_s`` while inside exits with reason ``lost``.
    """

    polygon: npt.NDArray[np.float64]
    confirm_frames: int = 2
    loiter_s: float | None = None
    lost_after_s: float = 1.0
    tracks: dict[int, Presence] = field(default_factory=dict)

    def update(
        self,
        anchors: npt.NDArray[np.float32],
        track_ids: npt.NDArray[np.int64],
        class_ids: npt.NDArray[np.int32],
        now: float,
        inside: npt.NDArray[np.bool_] | None = None,
    ) -> list[Visit]:
        if inside is None:
            inside = points_in_polygon(anchors, self.polygon)
        visits: list[Visit] = []
        for i, track_id in enumerate(track_ids.tolist()):
            is_inside = bool(inside[i])
            state = self.tracks.get(track_id)
            if state is None:
                state = self.tracks[track_id] = Presence(
                    int(class_ids[i]), False, now, now
                )
            state.seen = now
            if is_inside == state.inside:
                state.pending = 0
            else:
                if state.pending == 0:
                    state.pending_since = now
                state.pending += 1
                if state.pending >= self.confirm_frames:
                    at = state.pending_since
                    if is_inside:
                        visits.append(
                            Visit("zone_enter", track_id, state.class_id, at, 0)
                        )
                    else:
                        visits.append(
                            Visit(
                                "zone_exit",
                                track_id,
                                state.class_id,
                                at,
                                at - state.since,
                                "left",
                            )
                        )
                    state.inside, state.since = is_inside, at
                    state.pending, state.loitered = 0, False
            if (
                state.inside
                and self.loiter_s is not None
                and not state.loitered
                and now - state.since >= self.loiter_s
            ):
                state.loitered = True
                visits.append(
                    Visit("loitering", track_id, state.class_id, now, now - state.since)
                )
        for track_id, state in list(self.tracks.items()):
            if now - state.seen > self.lost_after_s:
                if state.inside:
                    visits.append(
                        Visit(
                            "zone_exit",
                            track_id,
                            state.class_id,
                            state.seen,
                            state.seen - state.since,
                            "lost",
                        )
                    )
                del self.tracks[track_id]
        return visits

    def end_all(self) -> list[Visit]:
        """The camera went away: every track inside exits (``lost``), as last seen."""
        visits = [
            Visit(
                "zone_exit",
                track_id,
                state.class_id,
                state.seen,
                state.seen - state.since,
                "lost",
            )
            for track_id, state in self.tracks.items()
            if state.inside
        ]
        self.tracks.clear()
        return visits


class ZoneState(msgspec.Struct, frozen=True):
    """The last occupancy reported (per class id), and each track's presence."""

    last: dict[int, int] | None
    tracks: dict[int, Presence]


class ZoneRule(Rule):
    """Occupancy events when the count per class changes, and each track's visits;
    with ``min_mask_overlap``, membership by mask overlap instead of the anchor."""

    config_type = ZoneRuleConfig
    state_type = ZoneState
    events = ZONE_EVENTS

    def __init__(self, config: ZoneRuleConfig, lost_track_s: float) -> None:
        super().__init__(config, lost_track_s)
        polygon = np.array(config.polygon, np.float64)
        self.occupancy = ZoneCounter(polygon)
        self.visits = ZoneVisits(
            polygon, config.confirm_frames, config.loiter_s, lost_track_s
        )
        self._regions: dict[tuple[int, int], npt.NDArray[np.bool_]] = {}

    def evaluate(
        self,
        context: RuleContext,
        frame: Frame,
        subset: Detections,
        anchors: npt.NDArray[np.float32],
        ids: npt.NDArray[np.int64],
    ) -> list[Event]:
        rule = self.config
        events: list[Event] = []
        inside, coverage = self._mask_membership(frame, subset)
        occupancy = self.occupancy.update(anchors, subset.class_id, inside)
        if context.aggregate is not None:
            context.aggregate.add_occupancy(
                rule.name, sum((self.occupancy.last or {}).values())
            )
        if occupancy is not None:
            events.append(
                context.event(
                    frame,
                    rule,
                    "zone_occupancy",
                    ZoneOccupancyData(
                        {context.names[c]: n for c, n in occupancy.items()}, coverage
                    ),
                    value=float(sum(occupancy.values())),
                )
            )
        for visit in self.visits.update(
            anchors, ids, subset.class_id, frame.pts, inside
        ):
            events.append(visit_event(context, frame, rule, visit))
        return events

    def _mask_membership(
        self, frame: Frame, subset: Detections
    ) -> tuple[npt.NDArray[np.bool_] | None, float | None]:
        """For a mask-overlap zone: which objects have enough of their mask inside,
        and the share of the zone the masks cover (None, None otherwise)."""
        share = self.config.min_mask_overlap
        if share is None or subset.masks is None:
            return None, None
        key = (frame.height, frame.width)
        region = self._regions.get(key)
        if region is None:
            polygon = np.asarray(self.config.polygon, np.float64)
            region = self._regions[key] = polygon_region(
                polygon, frame.height, frame.width
            )
        areas = subset.masks.area()
        inside = subset.masks.area_inside(region) >= share * np.maximum(areas, 1)
        coverage = subset.masks.coverage(region) / max(1, int(region.sum()))
        return inside & (areas > 0), round(coverage, 4)

    def snapshot(self) -> ZoneState:
        return ZoneState(self.occupancy.last, self.visits.tracks)

    def restore(self, saved: ZoneState) -> None:
        self.occupancy.last = saved.last
        self.visits.tracks = dict(saved.tracks)

    def end_tracks(self, context: RuleContext, frame: Frame) -> list[Event]:
        return [
            visit_event(context, frame, self.config, visit)
            for visit in self.visits.end_all()
        ]

    def overlay(self, context: RuleContext) -> OverlayZone:
        rule = self.config
        return OverlayZone(
            name=rule.name,
            polygon=tuple(tuple(p) for p in rule.polygon),
            count=sum((self.occupancy.last or {}).values()),
        )


def visit_event(
    context: RuleContext, frame: Frame, rule: ZoneRuleConfig, visit: Visit
) -> Event:
    """The event of one visit step: enter, exit (with its reason) or loitering."""
    context.count(f"{rule.name}/{visit.kind}")
    at, dwell = round(visit.at, 3), round(visit.dwell_s, 3)
    data: msgspec.Struct
    if visit.kind == "zone_enter":
        data = ZoneEnterData(at)
    elif visit.kind == "loitering":
        data = LoiteringData(at, dwell)
    else:
        data = ZoneExitData(at, dwell, "lost" if visit.reason == "lost" else "left")
    return context.event(
        frame,
        rule,
        visit.kind,
        data,
        track_id=visit.track_id,
        class_id=visit.class_id,
        value=dwell,
    )
