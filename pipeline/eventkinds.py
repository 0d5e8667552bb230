"""The vocabulary of events, as the kinds that produce them register it.

A rule kind (or any stage kind that emits events) registers one ``EventKindSpec``
per event kind it produces: the kind's name, the struct its ``data`` holds, and
how sinks and reports present it. Everything that used to list event kinds by
hand is derived from these registrations: the JSON Schema (``pipeline.eventschema``),
the SQLite views of the event store, the MQTT state topics and Home Assistant
entities, and the series of ``framechain report``. A kind registered by a plugin
travels, is stored and is published like a built-in one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import msgspec

if TYPE_CHECKING:
    from pipeline.messages import Event

KIND_PATTERN = r"^[a-z][a-z0-9_]{0,47}$"
"""What an event kind's name looks like (it is part of event ids and MQTT topics)."""

ReportRole = Literal["count", "level", "span_start", "span_end"]
"""How ``framechain report`` draws a kind: ``count``: events per time bucket, one
bar series per camera, rule and direction; ``level``: ``value`` as a step line;
``span_start`` / ``span_end``: a shaded period between the two."""


@dataclass(frozen=True)
class HomeAssistantEntity:
    """The Home Assistant entity that shows a retained state topic (MQTT
    discovery). ``name`` may hold ``{rule}``; ``settings`` are merged into the
    discovery config (``state_class``, ``unit_of_measurement``, ``icon`` ...)."""

    component: Literal["sensor", "binary_sensor"]
    name: str
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StateTopic:
    """A retained MQTT topic that events of a kind keep current, under
    ``<prefix>/<camera>/``; ``topic`` may hold ``{rule}``. ``value`` gives the
    payload for one event (None: this event does not change it)."""

    topic: str
    value: Callable[[Event], str | None]
    entity: HomeAssistantEntity | None = None

    def path(self, rule: str) -> str:
        return self.topic.replace("{rule}", rule)


@dataclass(frozen=True)
class EventKindSpec:
    """One event kind: its name, what its ``data`` holds (a msgspec struct, the
    rule builds one and the event carries it as a JSON object), and what the
    other fields mean for it.

    ``rule``: the fixed rule name of events of this kind (``camera``,
    ``aggregate``), or None when it is the emitting rule's name. ``tracked``:
    each event is about one track (``track_id`` >= 0). ``directions``: the values
    ``direction`` takes, when it is used. ``states``: retained MQTT topics the
    events keep current. ``report``: how ``framechain report`` draws it.
    """

    name: str
    data: type[msgspec.Struct]
    description: str
    value: str = ""
    rule: str | None = None
    tracked: bool = False
    directions: tuple[str, ...] = ()
    states: tuple[StateTopic, ...] = ()
    report: ReportRole | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(KIND_PATTERN, self.name):
            raise ValueError(
                f"event kind {self.name!r}: use lower-case letters, digits and _ "
                "(at most 48), starting with a letter"
            )

    def to_data(self, data: msgspec.Struct) -> dict[str, Any]:
        """``data`` as the event carries it: a JSON object, fields in order.

        Raises:
            TypeError: ``data`` is not this kind's struct (a rule's bug).
        """
        if type(data) is not self.data:
            raise TypeError(
                f"event kind {self.name} carries {self.data.__name__} data, "
                f"not {type(data).__name__}"
            )
        built: dict[str, Any] = msgspec.to_builtins(data)
        return built


class EventKinds:
    """The registered event kinds, and which ones each emitter (a rule kind's
    config model, or a stage kind's name) produces."""

    def __init__(self) -> None:
        self._specs: dict[str, EventKindSpec] = {}
        self._by_emitter: dict[object, tuple[EventKindSpec, ...]] = {}

    def add(self, emitter: object, specs: tuple[EventKindSpec, ...]) -> None:
        """Register ``emitter``'s kinds.

        Raises:
            ValueError: another emitter registered a different kind of that name.
        """
        for spec in specs:
            known = self._specs.get(spec.name)
            if known is not None and known != spec:
                raise ValueError(f"event kind {spec.name} is registered twice")
            self._specs[spec.name] = spec
        self._by_emitter[emitter] = self._by_emitter.get(emitter, ()) + tuple(
            s for s in specs if s not in self._by_emitter.get(emitter, ())
        )

    def get(self, name: str) -> EventKindSpec | None:
        return self._specs.get(name)

    def of(self, emitter: object) -> tuple[EventKindSpec, ...]:
        """What ``emitter`` produces, in registration order."""
        return self._by_emitter.get(emitter, ())

    def all(self) -> tuple[EventKindSpec, ...]:
        """Every kind, in registration order."""
        return tuple(self._specs.values())

    def names(self) -> tuple[str, ...]:
        return tuple(self._specs)
