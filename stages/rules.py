"""Analytics rules: pure functions of (rule state, tracked detections).

Geometry conventions (image pixels, y grows downwards):
- A line runs from ``start`` to ``end``. Walking along it from start to end, objects
  on the right-hand side are "inside". Crossing from the left side to the right side
  is direction ``in``, the reverse is ``out``. For a line drawn left to right across the
  image, ``in`` means moving down the image.
- A crossing counts only where the object's path meets the segment between the two
  end points, and only once the anchor has stayed more than ``band_px`` away from the
  line on the new side for ``confirm_frames`` frames, so jitter does not count twice.
- A zone holds the objects whose anchor lies inside its polygon (even-odd rule), or
  with ``min_mask_overlap`` (segmentation models) those with at least that share of
  their mask inside it. A track enters (or exits) once it has been inside (or
  outside) for ``confirm_frames`` frames; the event's time is the first of those
  frames, so dwell time is not inflated by the debounce. A track the tracker loses
  while inside exits with reason ``lost``.
- A crowd rule watches the number of tracked objects in a polygon (or the whole
  frame): it starts once that number has stayed at or above ``threshold`` for
  ``min_duration_s`` and ends only once it has stayed below ``clear_below`` for
  ``clear_duration_s``; the gap between the two levels is the hysteresis that keeps a
  crowd hovering around the threshold from flapping.

Times are frame presentation times in seconds, so results are the same however fast
the chain runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator

from pipeline.configtypes import StrictModel

RuleName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Anchor = Literal["bottom_center", "center"]


class RuleBase(StrictModel):
    name: RuleName = Field(
        description="Rule name, unique per camera; used in event ids and topics."
    )
    classes: list[str] | None = Field(
        default=None, description="Class names counted; all classes when omitted."
    )
    anchor: Anchor = Field(default="bottom_center", description="Box point tested.")
    low_confidence_below: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Events of a track whose mean confidence is below this are "
        "flagged low_confidence.",
    )


class LineRuleConfig(RuleBase):
    kind: Literal["line"] = Field(description="Directional line crossing count.")
    start: tuple[float, float] = Field(
        description="Line start [x, y] in source pixels."
    )
    end: tuple[float, float] = Field(description="Line end [x, y] in source pixels.")
    band_px: float = Field(
        default=2.0, ge=0, description="Hysteresis band around the line, pixels."
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


def _check_area(polygon: list[tuple[float, float]] | None) -> None:
    if polygon is not None and polygon_area(np.asarray(polygon, np.float64)) < 1:
        raise ValueError("polygon has no area; give at least 3 non-collinear points")


class ZoneRuleConfig(RuleBase):
    kind: Literal["zone"] = Field(
        description="Polygon zone: occupancy, enter/exit and dwell events."
    )
    polygon: list[tuple[float, float]] = Field(
        min_length=3, description="Polygon vertices [[x, y], ...] in source pixels."
    )
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

    @model_validator(mode="after")
    def _has_area(self) -> ZoneRuleConfig:
        _check_area(self.polygon)
        return self


class CrowdRuleConfig(RuleBase):
    kind: Literal["crowd"] = Field(
        description="Crowd threshold on the number of tracked objects."
    )
    polygon: list[tuple[float, float]] | None = Field(
        default=None,
        min_length=3,
        description="Area watched, [[x, y], ...]; the whole frame when omitted.",
    )
    threshold: int = Field(ge=1, description="Objects that make a crowd.")
    min_duration_s: float = Field(
        default=2.0, ge=0, description="Seconds at or above threshold to start."
    )
    clear_below: int | None = Field(
        default=None,
        ge=1,
        description="The crowd ends below this many objects (hysteresis); "
        "default: threshold.",
    )
    clear_duration_s: float | None = Field(
        default=None,
        ge=0,
        description="Seconds below clear_below to end; default: min_duration_s.",
    )

    @model_validator(mode="after")
    def _levels(self) -> CrowdRuleConfig:
        _check_area(self.polygon)
        if self.clear_below is not None and self.clear_below > self.threshold:
            raise ValueError(
                f"clear_below ({self.clear_below}) must not exceed threshold "
                f"({self.threshold})"
            )
        return self


RuleConfig = Annotated[
    LineRuleConfig | ZoneRuleConfig | CrowdRuleConfig, Field(discriminator="kind")
]


def polygon_area(points: npt.NDArray[np.float64]) -> float:
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def points_in_polygon(
    points: npt.NDArray[np.float32], polygon: npt.NDArray[np.float64]
) -> npt.NDArray[np.bool_]:
    """Even-odd test of (n, 2) points against a (k, 2) polygon, vectorised."""
    if len(points) == 0:
        return np.zeros(0, bool)
    px, py = points[:, 0:1], points[:, 1:2]
    x1, y1 = polygon[:, 0], polygon[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    straddles = (y1 > py) != (y2 > py)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
    return np.count_nonzero(straddles & (px < x_cross), axis=1) % 2 == 1


@dataclass(frozen=True, slots=True)
class Crossing:
    track_id: int
    class_id: int
    direction: Literal["in", "out"]


@dataclass(slots=True)
class _TrackSide:
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
    tracks: dict[int, _TrackSide] = field(default_factory=dict)

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
                    self.tracks[track_id] = _TrackSide(side, d, t, now)
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
            self.tracks[track_id] = _TrackSide(side, d, t, now)
        return crossings

    def forget(self, older_than: float) -> None:
        """Drop the state of tracks last seen before ``older_than`` (frame time);
        tracker ids are never reused, so this only bounds memory."""
        for track_id in [k for k, v in self.tracks.items() if v.seen < older_than]:
            del self.tracks[track_id]


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


@dataclass(slots=True)
class _Presence:
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
    tracks: dict[int, _Presence] = field(default_factory=dict)

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
                state = self.tracks[track_id] = _Presence(
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
    _holding_since: float | None = None

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
            self._holding_since = None
            if self.active:
                self.peak = max(self.peak, count)
            return None
        if self._holding_since is None:
            self._holding_since = now
        since = self._holding_since
        if self.active:
            if now - since < self.clear_duration_s:
                return None
            self.active, self._holding_since = False, None
            return CrowdChange(
                "crowd_end", since, count, self.peak, since - self.started
            )
        self.peak = max(self.peak if since != now else 0, count)
        if now - since < self.min_duration_s:
            return None
        self.active, self.started, self._holding_since = True, since, None
        return CrowdChange("crowd_start", since, count, self.peak, 0.0)
