"""The annotate kind: one process per camera that asks for annotated output."""

from __future__ import annotations

from typing import Any

import zmq

from pipeline.registry import Instance, PlanContext, Registry, Section, StageKind
from pipeline.stageplan import StagePlan
from pipeline.transport import LinkOptions
from stages.annotate.stage import AnnotateConfig


def _instances(config: Any) -> list[Instance]:
    return [
        Instance(name, camera)
        for name, camera in config.cameras.items()
        if camera.annotate is not None
    ]


def _plan(context: PlanContext, instance: Instance) -> StagePlan:
    camera, annotate = instance.target, instance.config.annotate
    name = f"annotate.{camera}"
    endpoint = context.link(
        "frames", zmq.PULL, f"{name}.in", True, LinkOptions(hwm=2, linger_ms=0)
    )

    def build() -> Any:
        from stages.annotate.stage import AnnotateStage

        return AnnotateStage(camera, annotate)

    return StagePlan(name, "annotate", (endpoint,), build)


KIND = StageKind(
    name="annotate",
    role="transform",
    position=4,
    instances=_instances,
    plan=_plan,
    endpoints=lambda config: {f"annotate.{i.target}.in" for i in _instances(config)},
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
