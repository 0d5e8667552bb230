"""The event kinds the track stage produces itself, beside its rules': interval
counts, camera status, and a rule whose geometry lies outside the frame."""

from __future__ import annotations

from typing import Annotated

import msgspec

from pipeline.eventkinds import EventKindSpec, StateTopic


class ZoneSummary(msgspec.Struct, frozen=True):
    """A zone's occupancy over one interval."""

    max: Annotated[int, msgspec.Meta(ge=0, description="Most objects at once.")]
    mean: Annotated[float, msgspec.Meta(ge=0, description="Mean objects per frame.")]


class CountsData(msgspec.Struct, frozen=True):
    """One interval's counts (``aggregate_s``)."""

    start: Annotated[float, msgspec.Meta(description="Interval start, frame time.")]
    end: Annotated[float, msgspec.Meta(description="Interval end, frame time.")]
    partial: Annotated[
        bool, msgspec.Meta(description="The stream ended before the interval did.")
    ]
    lines: Annotated[
        dict[str, dict[str, dict[str, int]]],
        msgspec.Meta(description="Crossings by line, direction and class."),
    ]
    zones: Annotated[
        dict[str, ZoneSummary], msgspec.Meta(description="Occupancy by zone.")
    ]


class CameraStatusData(msgspec.Struct, frozen=True):
    """Why a live camera went online or offline."""

    reason: Annotated[
        str,
        msgspec.Meta(
            description="connected, refused, timeout, stalled, auth_failed, eof, error."
        ),
    ]
    detail: Annotated[str, msgspec.Meta(description="The source's own words.")]


class OutsideFrameData(msgspec.Struct, frozen=True):
    """A rule's points that lie outside the camera's frame."""

    frame: Annotated[
        tuple[int, int], msgspec.Meta(description="The frame's [width, height].")
    ]
    outside: Annotated[
        list[tuple[float, float]], msgspec.Meta(description="The [x, y] outside it.")
    ]


def _status(state: str) -> StateTopic:
    return StateTopic("status", lambda _event: state)


def _camera(name: str, state: str) -> EventKindSpec:
    return EventKindSpec(
        name,
        CameraStatusData,
        f"A live camera went {state} (in sequence with its frames).",
        rule="camera",
        states=(_status(state),),
    )


COUNTS = EventKindSpec(
    "counts",
    CountsData,
    "The counts of one interval of aggregate_s seconds of frame time.",
    value="Crossings in the interval.",
    rule="aggregate",
)
CAMERA_ONLINE = _camera("camera_online", "online")
CAMERA_OFFLINE = _camera("camera_offline", "offline")
RULE_OUTSIDE_FRAME = EventKindSpec(
    "rule_outside_frame",
    OutsideFrameData,
    "A rule's geometry reaches outside the frame (once per frame size).",
)

TRACK_EVENTS = (COUNTS, CAMERA_ONLINE, CAMERA_OFFLINE, RULE_OUTSIDE_FRAME)
"""Registered by the track kind, under its own name."""
