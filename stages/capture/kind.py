"""The capture kinds: one process per camera, one variant of the camera's
``source`` per reader (file, RTSP, HTTP, USB)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pipeline.metrics import frames_dropped
from pipeline.registry import (
    Instance,
    PlanContext,
    Registry,
    Sample,
    Slot,
    StageKind,
    StatsView,
    each_camera,
    read_stats,
)
from pipeline.stageplan import RuntimeStats, StagePlan
from pipeline.topology import Port
from pipeline.transport import LinkOptions
from stages.capture.file import CaptureStage, FileSourceConfig
from stages.capture.live import (
    HttpSourceConfig,
    LiveCaptureStage,
    RtspSourceConfig,
    UsbSourceConfig,
)
from stages.capture.stats import FileCaptureStats, LiveCaptureStats

PORTS = (
    # capture binds: a restarted decode reconnects to the capture it restarts
    Port("packets", "packets", "out", link="packets", binds=True, endpoint="out"),
    # a copy of each packet for the recorder beside the chain (event clips),
    # dropped whenever it cannot take it: recording never holds capture back
    Port(
        "record",
        "recorded",
        "out",
        link="packets",
        options=LinkOptions(hwm=256, linger_ms=0),
        best_effort=True,
    ),
)


def _plan(context: PlanContext, instance: Instance) -> StagePlan:
    camera, source = instance.target, instance.config.source
    name = f"capture.{camera}"
    # the recorder serves every camera; only those with clips send it packets
    record = context.wiring.connected(name, "record") and (
        getattr(instance.config, "clips", None) is not None
    )
    if not isinstance(source, FileSourceConfig):
        # a live source never waits for the chain: full queues drop packets
        return StagePlan(
            name,
            lambda: LiveCaptureStage(camera, source, record=record),
            lossy_ports=frozenset({"packets"}),
        )
    lossy = frozenset({"packets"}) if source.live else frozenset()
    return StagePlan(
        name,
        lambda: CaptureStage(camera, source, record=record),
        lossy_ports=lossy,
    )


def _metrics(name: str, stats: StatsView, _chain: StatsView) -> Iterable[Sample]:
    camera = name.partition(".")[2]
    live = read_stats(stats, LiveCaptureStats)  # a file's: zeros and "starting"
    runtime = read_stats(stats, RuntimeStats)
    yield Sample(
        "reconnects",
        "counter",
        "Reconnection attempts of a live source (each try after the first)",
        {"camera": camera},
        live.reconnect_attempts,
    )
    yield frames_dropped(
        camera,
        "capture_queue",
        runtime.dropped.get("packets", 0) + live.queue_overflows,
    )
    yield Sample(
        "camera_online",
        "gauge",
        "1 while the camera delivers",
        {"camera": camera},
        0.0 if live.state == "offline" else 1.0,
    )


def _total_frames(stats: StatsView) -> int:
    return read_stats(stats, FileCaptureStats).total_frames


def _file_state(_stats: StatsView, process_state: str) -> str:
    """A file is there while its capture runs."""
    return "online" if process_state == "running" else process_state


def _live_state(stats: StatsView, process_state: str) -> str:
    """What the connection says, once the stage has reported."""
    if not stats:
        return _file_state(stats, process_state)
    return read_stats(stats, LiveCaptureStats).state


def _summary(_loaded: Any, _target: str, stats: StatsView) -> list[str]:
    reconnects = read_stats(stats, LiveCaptureStats).reconnects
    return [f"    reconnects {reconnects}"] if reconnects else []


def capture_kind(source_type: type) -> StageKind:
    """The capture kind for one source config model."""
    return StageKind(
        name="capture",
        role="source",
        scope="camera",
        instances=each_camera(lambda camera: isinstance(camera.source, source_type)),
        plan=_plan,
        ports=PORTS,
        variant=("source", source_type),
        ends_streams=True,
        groupable=True,
        progress=("total", _total_frames),
        metrics=_metrics,
        summary=_summary,
        camera_state=_file_state if source_type is FileSourceConfig else _live_state,
    )


def register(registry: Registry) -> None:
    registry.add_slot(Slot("source", "camera", "source", "Where frames come from."))
    for source_type in (
        FileSourceConfig,
        RtspSourceConfig,
        HttpSourceConfig,
        UsbSourceConfig,
    ):
        registry.register(capture_kind(source_type))
