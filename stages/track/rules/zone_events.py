"""The zone rule's event kinds: occupancy changes, and each track's visit
(enter, exit, loitering)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from pipeline.eventkinds import EventKindSpec, HomeAssistantEntity, StateTopic
from pipeline.messages import Event

AtPts = Annotated[
    float, msgspec.Meta(description="Frame time the step happened (debounce start).")
]
DwellS = Annotated[
    float, msgspec.Meta(ge=0, description="Seconds inside the zone so far.")
]


class ZoneOccupancyData(msgspec.Struct, frozen=True, omit_defaults=True):
    """The zone's occupancy after a change."""

    by_class: Annotated[
        dict[str, int], msgspec.Meta(description="Objects inside, by class name.")
    ]
    coverage: Annotated[
        float | None,
        msgspec.Meta(
            description="Share of the zone the objects' masks cover "
            "(mask-overlap zones only)."
        ),
    ] = None


class ZoneEnterData(msgspec.Struct, frozen=True):
    """A track entered."""

    at_pts: AtPts


class ZoneExitData(msgspec.Struct, frozen=True):
    """A track left, or was lost while inside."""

    at_pts: AtPts
    dwell_s: DwellS
    reason: Annotated[
        Literal["left", "lost"],
        msgspec.Meta(description="left: seen outside; lost: no longer tracked."),
    ]


class LoiteringData(msgspec.Struct, frozen=True):
    """A track stayed inside for loiter_s."""

    at_pts: AtPts
    dwell_s: DwellS


def _occupancy(event: Event) -> str:
    return str(int(event.value))


ZONE_OCCUPANCY = EventKindSpec(
    "zone_occupancy",
    ZoneOccupancyData,
    "The number of objects in the zone changed.",
    value="Objects in the zone.",
    states=(
        StateTopic(
            "{rule}/occupancy",
            _occupancy,
            HomeAssistantEntity(
                "sensor",
                "{rule} occupancy",
                {
                    "state_class": "measurement",
                    "unit_of_measurement": "objects",
                    "icon": "mdi:account-group",
                },
            ),
        ),
    ),
    report="level",
)
ZONE_ENTER = EventKindSpec(
    "zone_enter",
    ZoneEnterData,
    "A track entered the zone (after confirm_frames inside).",
    value="0.",
    tracked=True,
)
ZONE_EXIT = EventKindSpec(
    "zone_exit",
    ZoneExitData,
    "A track left the zone, or was lost inside it.",
    value="Dwell seconds.",
    tracked=True,
)
LOITERING = EventKindSpec(
    "loitering",
    LoiteringData,
    "A track has stayed in the zone for loiter_s.",
    value="Dwell seconds.",
    tracked=True,
)

ZONE_EVENTS = (ZONE_OCCUPANCY, ZONE_ENTER, ZONE_EXIT, LOITERING)
