"""What every analytics rule kind shares: its config base, the geometry, and the
contract between a rule and the rule engine that drives it.

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

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Protocol

import msgspec
import numpy as np
import numpy.typing as npt
from pydantic import Field

from pipeline.configtypes import StrictModel
from pipeline.eventkinds import EventKindSpec

if TYPE_CHECKING:
    from pipeline.detections import Detections
    from pipeline.messages import Event, Frame, OverlayLine, OverlayZone
    from pipeline.registry import Registry
    from stages.track.aggregate import IntervalCounts

RuleName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Anchor = Literal["bottom_center", "center"]


class RuleConfig(StrictModel):
    """What every rule kind's config has: a rule kind's config model extends it
    with its ``kind`` literal and its geometry; its ``Rule`` holds the state."""

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

    def points(self) -> list[tuple[float, float]]:
        """The rule's geometry ([x, y] in frame pixels), checked against the
        frame once its size is known."""
        return []


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


class RuleContext(Protocol):
    """What a rule may use of the engine that runs it: event building (with the
    track's confidence, label and snapshot), the summary's counts, the interval
    aggregate, and per-rule running totals."""

    names: tuple[str, ...]
    aggregate: IntervalCounts | None
    totals: dict[tuple[str, str], int]

    def event(
        self,
        frame: Frame,
        rule: RuleConfig | None,
        kind: str,
        data: msgspec.Struct,
        *,
        track_id: int = -1,
        class_id: int = -1,
        direction: str = "",
        value: float = 0.0,
    ) -> Event: ...

    def count(self, key: str) -> None: ...


class Rule(ABC):
    """The state of one configured rule, and how a frame moves it on.

    ``evaluate`` is called once per tracked frame, in frame order, with the rows of
    the frame's detections that the rule's classes select; it returns the events
    that frame caused. Everything is a function of frame times, never the clock.

    What the events after a frame depend on is the rule's state: ``snapshot``
    hands it to the track stage's checkpoint as a ``state_type`` struct, and
    ``restore`` takes it back in a fresh rule built from the same config. A rule
    with nothing to carry returns an empty struct. Adding a field with a default
    keeps older checkpoints readable; any other change to the struct makes them
    refused (the stream starts over), never restored wrong.

    ``events`` are the event kinds the rule emits, each with the struct its
    ``data`` holds; ``register_rule`` registers them with the rule kind, and an
    event of a kind the rule did not register is refused as a bug.
    """

    config_type: ClassVar[type[RuleConfig]]
    state_type: ClassVar[type[msgspec.Struct]]
    events: ClassVar[tuple[EventKindSpec, ...]]

    def __init__(self, config: Any, lost_track_s: float) -> None:
        self.config = config

    @abstractmethod
    def evaluate(
        self,
        context: RuleContext,
        frame: Frame,
        subset: Detections,
        anchors: npt.NDArray[np.float32],
        ids: npt.NDArray[np.int64],
    ) -> list[Event]:
        """This frame's events."""

    @abstractmethod
    def snapshot(self) -> msgspec.Struct:
        """The rule's state, as a ``state_type``."""

    @abstractmethod
    def restore(self, saved: Any) -> None:
        """Back to ``saved`` (a ``state_type``), in a rule just built."""

    def end_tracks(self, context: RuleContext, frame: Frame) -> list[Event]:
        """The camera went away: every track ends (``frame``: the last one)."""
        return []

    def forget(self, older_than: float) -> None:
        """Drop what the rule holds on tracks last seen before ``older_than``."""

    def overlay(self, context: RuleContext) -> OverlayLine | OverlayZone | None:
        """What annotation draws of this rule now."""
        return None


def register_rule(registry: Registry, rule: type[Rule]) -> None:
    """Make a rule kind known: its config becomes a variant of a camera's
    ``rules``, and its event kinds part of the event vocabulary (the one line a
    rule kind's ``register`` needs)."""
    registry.add_variant("rule", rule.config_type, rule)
    registry.events.add(rule.config_type, rule.events)


def rule_types(rules: Sequence[type[Rule]]) -> dict[type[RuleConfig], type[Rule]]:
    """Rule classes by the config model they are built from."""
    return {rule.config_type: rule for rule in rules}
