"""The record kind: one recorder beside the chain when any camera has ``clips``,
fed by capture's best-effort copies of the packets."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.config import ResolveContext
from pipeline.errors import ConfigError
from pipeline.registry import (
    Instance,
    PlanContext,
    Registry,
    Sample,
    Section,
    StageKind,
    StatsView,
    read_stats,
)
from pipeline.retention import PRUNED_HELP
from pipeline.stageplan import StagePlan
from pipeline.topology import Port
from pipeline.transport import LinkOptions
from stages.record.config import ClipConfig
from stages.record.stats import RecordStats
from stages.sinks.eventstore import store_config

RAW_SOURCES = frozenset({"usb"})
"""Sources whose frames arrive decoded: there are no packets to copy into a clip."""


def clip_cameras(config: Any) -> dict[str, ClipConfig]:
    return {
        name: camera.clips
        for name, camera in config.cameras.items()
        if getattr(camera, "clips", None) is not None
    }


def _instances(config: Any) -> list[Instance]:
    return [Instance("", config)] if clip_cameras(config) else []


def _resolve(context: ResolveContext) -> None:
    """Raises ConfigError: clips without a sqlite store to follow, on a raw
    source, or for an event kind nobody registered."""
    config = context.config
    cameras = clip_cameras(config)
    if not cameras:
        return
    if store_config(config) is None:
        raise ConfigError(
            context.problem(
                ("cameras", next(iter(cameras)), "clips"),
                "clips are cut for the events of a sqlite sink's store; add "
                "{kind: sqlite, path: events.db} to sinks",
            )
        )
    assert context.registry is not None
    known = context.registry.events.names()
    for name, clips in cameras.items():
        source = config.cameras[name].source.kind
        if source in RAW_SOURCES:
            raise ConfigError(
                context.problem(
                    ("cameras", name, "clips"),
                    f"a {source} camera's frames arrive decoded, with no stream to "
                    "copy clips from; remove clips or use an encoded source",
                )
            )
        for i, kind in enumerate(clips.kinds or ()):
            if kind not in known:
                raise ConfigError(
                    context.problem(
                        ("cameras", name, "clips", "kinds", i),
                        f"unknown event kind {kind!r}; known: {', '.join(known)}",
                    )
                )


def _plan(context: PlanContext, instance: Instance) -> StagePlan:
    loaded = context.loaded
    config = loaded.config
    cameras = clip_cameras(config)
    store = Path(store_config(config).path)
    state = Path(config.state_dir) / loaded.path.stem / "record.json"

    def build() -> Any:
        from stages.record.stage import RecordStage

        return RecordStage(cameras, store, state)

    return StagePlan("record", build)


def _metrics(name: str, stats: StatsView, _chain: StatsView) -> Iterable[Sample]:
    record = read_stats(stats, RecordStats)
    yield Sample("clips", "counter", "Event clips written", {}, record.clips_written)
    yield Sample(
        "clips_missed",
        "counter",
        "Events whose clip could not be cut: the buffer no longer held their video",
        {},
        record.clips_missed,
    )
    yield Sample(
        "clips_failed",
        "counter",
        "Clips that could not be muxed or written",
        {},
        record.clips_failed,
    )
    yield Sample(
        "clips_pending",
        "gauge",
        "Clips waiting for their post-roll",
        {},
        record.clips_pending,
    )
    yield Sample(
        "record_gaps",
        "counter",
        "Packets lost on their way to the recorder (the buffer skips to a keyframe)",
        {},
        record.gaps,
    )
    yield Sample(
        "pruned",
        "counter",
        PRUNED_HELP,
        {"store": "clips", "what": "clips"},
        record.clips_pruned,
    )


def _summary(_loaded: Any, _target: str, stats: StatsView) -> list[str]:
    record = read_stats(stats, RecordStats)
    line = f"  clips: {record.clips_written} written"
    if record.clips_missed or record.clips_failed:
        line += f", {record.clips_missed} missed, {record.clips_failed} failed"
    return [line]


KIND = StageKind(
    name="record",
    role="service",
    scope="single",
    instances=_instances,
    plan=_plan,
    ports=(
        # capture's copies of each camera's packets; a full queue drops them
        # there (the buffer then skips to the next keyframe)
        Port(
            "packets",
            "recorded",
            "in",
            link="packets",
            options=LinkOptions(hwm=4096, linger_ms=0),
        ),
    ),
    resolve=_resolve,
    metrics=_metrics,
    summary=_summary,
    sections=(
        Section(
            "camera",
            "clips",
            ClipConfig | None,
            "A clip of each event, cut from a rolling buffer of the camera's stream.",
            default=None,
        ),
    ),
)


def register(registry: Registry) -> None:
    registry.register(KIND)
