"""The capture kinds: one process per camera, one variant of the camera's
``source`` per reader (file, RTSP, HTTP, USB)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import zmq

from pipeline.registry import (
    Instance,
    PlanContext,
    Registry,
    Sample,
    Slot,
    StageKind,
    StatsView,
)
from pipeline.runtime import StagePlan
from stages.capture.file import CaptureStage, FileSourceConfig
from stages.capture.live import (
    HttpSourceConfig,
    LiveCaptureStage,
    RtspSourceConfig,
    UsbSourceConfig,
)

POSITION = 0


def _cameras_of(source_type: type) -> Any:
    def instances(config: Any) -> list[Instance]:
        return [
            Instance(name, camera)
            for name, camera in config.cameras.items()
            if isinstance(camera.source, source_type)
        ]

    return instances


def _endpoints(source_type: type) -> Any:
    def endpoints(config: Any) -> set[str]:
        return {f"capture.{i.target}.out" for i in _cameras_of(source_type)(config)}

    return endpoints


def _plan(context: PlanContext, instance: Instance) -> StagePlan:
    camera, source = instance.target, instance.config.source
    name = f"capture.{camera}"
    endpoint = context.link(
        "packets", zmq.PUSH, f"{name}.out", True, context.links["packets"]
    )
    if not isinstance(source, FileSourceConfig):
        # a live source never waits for the chain: full queues drop packets
        return StagePlan(
            name,
            "capture",
            (endpoint,),
            lambda: LiveCaptureStage(camera, source),
            lossy_ports=frozenset({"packets"}),
        )
    lossy = frozenset({"packets"}) if source.live else frozenset()
    return StagePlan(
        name,
        "capture",
        (endpoint,),
        lambda: CaptureStage(camera, source),
        lossy_ports=lossy,
    )


def _metrics(name: str, stats: StatsView, _chain: StatsView) -> Iterable[Sample]:
    camera = name.partition(".")[2]
    yield Sample(
        "reconnects",
        "counter",
        "Reconnections of a live source",
        {"camera": camera},
        stats.get("reconnects", 0),
    )
    yield Sample(
        "frames_dropped",
        "counter",
        "Frames dropped, by reason",
        {"camera": camera, "reason": "capture_queue"},
        stats.get("dropped.packets", 0) + stats.get("queue_overflows", 0),
    )
    yield Sample(
        "camera_online",
        "gauge",
        "1 while the camera delivers",
        {"camera": camera},
        0.0 if stats.get("state") == "offline" else 1.0,
    )


def _camera_state(stats: StatsView, process_state: str) -> str:
    return str(
        stats.get("state", "online" if process_state == "running" else process_state)
    )


def _summary(_loaded: Any, _target: str, stats: StatsView) -> list[str]:
    reconnects = stats.get("reconnects", 0)
    return [f"    reconnects {reconnects}"] if reconnects else []


def capture_kind(source_type: type, position: int = POSITION) -> StageKind:
    """The capture kind for one source config model."""
    return StageKind(
        name="capture",
        role="source",
        position=position,
        instances=_cameras_of(source_type),
        plan=_plan,
        endpoints=_endpoints(source_type),
        variant=("source", source_type),
        ends_streams=True,
        progress="total",
        metrics=_metrics,
        summary=_summary,
        camera_state=_camera_state,
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
