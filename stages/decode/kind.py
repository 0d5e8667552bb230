"""The decode kind: one process per camera, between its capture and detect."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import zmq

from pipeline.metrics import frame_age_samples
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
from pipeline.shm import ring_prefix
from pipeline.stage import Stage
from pipeline.stageplan import StagePlan
from stages.decode.config import DecodeConfig
from stages.decode.stats import DecodeStats
from stages.detect.letterbox import ModelInput


def _instances(config: Any) -> list[Instance]:
    return [Instance(name, camera) for name, camera in config.cameras.items()]


def _endpoints(config: Any) -> set[str]:
    return {f"decode.{camera}.acks" for camera in config.cameras}


def _plan(context: PlanContext, instance: Instance) -> StagePlan:
    from stages.detect.kind import model_size_pixels

    camera, decode = instance.target, instance.config.decode
    model = model_size_pixels(context.loaded, camera)
    shm = decode.shared_memory and context.uri("detect.in").startswith("ipc://")
    prefix = ring_prefix(context.runtime_dir) if shm else None
    links = context.links
    return StagePlan(
        f"decode.{camera}",
        "decode",
        (
            context.link(
                "packets", zmq.PULL, f"capture.{camera}.out", False, links["packets"]
            ),
            context.link(
                "acks", zmq.PULL, f"decode.{camera}.acks", True, links["events"]
            ),
            context.link("frames", zmq.PUSH, "detect.in", False, links["frames"]),
        ),
        lambda: _decode_stage(camera, decode, prefix, model),
    )


def _decode_stage(
    camera: str, decode: DecodeConfig, prefix: str | None, model: ModelInput | None
) -> Stage:
    """Imported here, in the decode process only (PyAV, OpenCV)."""
    from stages.decode.stage import DecodeStage

    return DecodeStage(camera, decode, prefix, model)


def _metrics(name: str, stats: StatsView, _chain: StatsView) -> Iterable[Sample]:
    camera = name.partition(".")[2]
    decode = read_stats(stats, DecodeStats)
    yield Sample(
        "frames",
        "counter",
        "Frames out of decode / through detect and track",
        {"stage": "decode", "camera": camera},
        decode.frames,
    )
    for reason, count in (
        ("behind", decode.frames_dropped_behind),
        ("packets_lost", decode.frames_dropped_gap),
    ):
        yield Sample(
            "frames_dropped",
            "counter",
            "Frames dropped, by reason",
            {"camera": camera, "reason": reason},
            count,
        )
    yield Sample(
        "decode_errors",
        "counter",
        "Packets that failed to decode",
        {"camera": camera},
        decode.decode_errors,
    )
    yield Sample(
        "queue_depth",
        "gauge",
        "Frames in flight behind decode",
        {"camera": camera, "stage": "decode"},
        decode.in_flight,
    )
    yield from frame_age_samples(
        decode.frame_age_out_p50_s, decode.frame_age_out_p99_s, camera, "decode"
    )


def _summary(_loaded: Any, _target: str, stats: StatsView) -> list[str]:
    decode = read_stats(stats, DecodeStats)
    behind, gap = decode.frames_dropped_behind, decode.frames_dropped_gap
    if not (behind or gap or decode.decode_errors):
        return []
    return [
        f"    dropped {behind + gap} frames (behind {behind}, lost packets {gap}), "
        f"decode errors {decode.decode_errors}"
    ]


KIND = StageKind(
    name="decode",
    role="transform",
    position=1,
    instances=_instances,
    plan=_plan,
    endpoints=_endpoints,
    sections=(
        Section(
            "camera",
            "decode",
            DecodeConfig,
            "Decoding.",
            default_factory=DecodeConfig,
        ),
    ),
    ends_streams=True,
    groupable=True,
    restarts_with=("capture",),
    metrics=_metrics,
    summary=_summary,
)


def register(registry: Registry) -> None:
    registry.register(KIND)
