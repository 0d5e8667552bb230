"""The annotate kind: one process per camera that asks for annotated output."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pipeline.registry import (
    Instance,
    PlanContext,
    Registry,
    Sample,
    Section,
    StageKind,
    StatsView,
    each_camera,
    read_stats,
)
from pipeline.retention import PRUNED_HELP
from pipeline.stageplan import StagePlan
from pipeline.topology import FULL_FRAMES, Port
from pipeline.transport import LinkOptions
from stages.annotate.config import AnnotateConfig
from stages.annotate.stats import AnnotateStats


def _plan(context: PlanContext, instance: Instance) -> StagePlan:
    camera, annotate = instance.target, instance.config.annotate
    name = f"annotate.{camera}"

    def build() -> Any:
        from stages.annotate.stage import AnnotateStage

        return AnnotateStage(camera, annotate)

    return StagePlan(name, build)


def _metrics(name: str, stats: StatsView, _chain: StatsView) -> Iterable[Sample]:
    camera = name.partition(".")[2]
    yield Sample(
        "pruned",
        "counter",
        PRUNED_HELP,
        {"store": f"video.{camera}", "what": "segments"},
        read_stats(stats, AnnotateStats).segments_pruned,
    )


def _summary(_loaded: Any, target: str, stats: StatsView) -> list[str]:
    pruned = read_stats(stats, AnnotateStats).segments_pruned
    return [f"    {pruned} old video segments pruned by retention"] if pruned else []


KIND = StageKind(
    name="annotate",
    role="transform",
    scope="camera",
    instances=each_camera(lambda camera: camera.annotate is not None),
    plan=_plan,
    ports=(
        # tracked frames from track, at most two queued (track drops the rest)
        Port("frames", "tracked", "in", options=LinkOptions(hwm=2, linger_ms=0)),
    ),
    pixels=lambda _loaded, _camera: FULL_FRAMES,
    metrics=_metrics,
    summary=_summary,
    sections=(
        Section(
            "camera",
            "annotate",
            AnnotateConfig | None,
            "Annotated MP4 and/or MJPEG over HTTP.",
            default=None,
        ),
    ),
)


def register(registry: Registry) -> None:
    registry.register(KIND)
