"""The sink kinds: one process per ``sinks`` entry, each a variant of that list.

A new sink kind is its config model (with a ``kind`` literal, a ``name`` and a
``target()``), its ``EventSink`` class, and one ``sink_kind`` registration."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pipeline.config import LoadedConfig
from pipeline.registry import (
    Instance,
    PlanContext,
    Registry,
    Sample,
    Slot,
    StageKind,
    StatsView,
    read_stats,
)
from pipeline.retention import PRUNED_HELP
from pipeline.stage import Stage
from pipeline.stageplan import StagePlan
from pipeline.topology import Port
from stages.sinks.base import EventSink
from stages.sinks.stats import ForwardingSinkStats, SqliteSinkStats

SinkFactory = Callable[[LoadedConfig, Any, list[str]], EventSink]
"""(loaded config, the sink's config entry, camera names) -> the sink stage."""

PORTS = (
    Port("events", "events", "in", link="events"),
    # addressed to each camera's track: route("stored", camera) (sinks.base)
    Port("stored", "stored", "out", link="events", upstream=True),
)


def sink_kind(config_type: type[Any], factory: SinkFactory) -> StageKind:
    """The stage kind of one sink config model."""

    def instances(config: Any) -> list[Instance]:
        sinks: list[Any] = config.sinks
        return [Instance(s.name, s) for s in sinks if isinstance(s, config_type)]

    def plan(context: PlanContext, instance: Instance) -> StagePlan:
        name = f"sink.{instance.target}"
        streams = list(context.loaded.config.cameras)

        def build() -> Stage:
            stage = factory(context.loaded, instance.config, streams)
            stage.name = instance.target  # in its answers to the tracks' marks
            return stage

        return StagePlan(name, build, exit_when_finished=True)

    return StageKind(
        name="sink",
        role="terminal",
        scope="named",
        instances=instances,
        plan=plan,
        ports=PORTS,
        variant=("sink", config_type),
        metrics=_metrics,
        summary=_summary,
    )


def _metrics(name: str, stats: StatsView, chain: StatsView) -> Iterable[Sample]:
    sink = name.partition(".")[2]
    own = read_stats(stats, ForwardingSinkStats)  # a local sink: spooled 0
    received = own.events
    yield Sample(
        "events", "counter", "Events received by a sink", {"sink": sink}, received
    )
    yield Sample(
        "events_undecodable",
        "counter",
        "Events a sink received and could not decode (logged as errors, not stored)",
        {"sink": sink},
        own.undecodable,
    )
    produced = int(chain.get("events_emitted", 0))
    yield Sample(
        "sink_backlog",
        "gauge",
        "Events produced but not yet delivered by the sink (in flight or spooled)",
        {"sink": sink},
        max(0, produced - received) + own.spooled,
    )
    pruned = read_stats(stats, SqliteSinkStats).pruned_events
    for what, count in (("events", pruned), ("spooled_events", own.spool_pruned)):
        yield Sample(
            "pruned",
            "counter",
            PRUNED_HELP,
            {"store": f"sink.{sink}", "what": what},
            count,
        )


def _summary(loaded: LoadedConfig, target: str, stats: StatsView) -> list[str]:
    sink = next(s for s in loaded.config.sinks if s.name == target)
    own = read_stats(stats, ForwardingSinkStats)
    line = f"  sink {target}: {own.events} events -> {sink.target()}"
    if own.spooled:
        line += f" ({own.spooled} not yet delivered, kept in the spool)"
    pruned = read_stats(stats, SqliteSinkStats).pruned_events + own.spool_pruned
    if pruned:
        line += f"; {pruned} old events pruned by retention"
    return [line]


def _sqlite(loaded: LoadedConfig, config: Any, streams: list[str]) -> EventSink:
    from stages.sinks.sqlite import SqliteSink

    return SqliteSink(config, streams, loaded.registry.events.all())


def _jsonl(_loaded: LoadedConfig, config: Any, streams: list[str]) -> EventSink:
    from stages.sinks.jsonl import JsonlSink

    return JsonlSink(config, streams)


def _webhook(_loaded: LoadedConfig, config: Any, streams: list[str]) -> EventSink:
    from stages.sinks.webhook import WebhookSink

    return WebhookSink(config, streams)


def _mqtt(loaded: LoadedConfig, config: Any, streams: list[str]) -> EventSink:
    from stages.sinks.mqtt import MqttSink

    kinds = loaded.registry.events
    rules = {
        camera: [(rule.name, kinds.of(type(rule))) for rule in cam.rules]
        for camera, cam in loaded.config.cameras.items()
    }
    # events carry snapshot URLs where the API serves them
    pictures = [
        camera
        for camera, cam in loaded.config.cameras.items()
        if loaded.config.http.api and cam.snapshots is not None
    ]
    return MqttSink(config, streams, kinds.all(), rules, pictures)


def register(registry: Registry) -> None:
    from stages.sinks.jsonl import JsonlSinkConfig
    from stages.sinks.mqtt import MqttSinkConfig
    from stages.sinks.sqlite import SqliteSinkConfig
    from stages.sinks.webhook import WebhookSinkConfig

    registry.add_slot(
        Slot("sink", "root", "sinks", "Where events go.", many=True, min_length=1)
    )
    registry.register(sink_kind(SqliteSinkConfig, _sqlite))
    registry.register(sink_kind(JsonlSinkConfig, _jsonl))
    registry.register(sink_kind(MqttSinkConfig, _mqtt))
    registry.register(sink_kind(WebhookSinkConfig, _webhook))
