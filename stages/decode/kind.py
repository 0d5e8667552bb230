"""The decode kind: one process per camera, between its capture and detect."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pipeline.config import LoadedConfig
from pipeline.metrics import frame_age_samples, frames_dropped, frames_through
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
from pipeline.shm import ring_prefix
from pipeline.stage import Stage
from pipeline.stageplan import StagePlan
from pipeline.topology import Port, scaled_size
from stages.decode.config import DecodeConfig
from stages.decode.stats import DecodeStats
from stages.detect.letterbox import ModelInput

PORTS = (
    Port("packets", "packets", "in", link="packets", binds=False),
    Port("acks", "acks", "in", link="events", endpoint="acks", upstream=True),
    Port("frames", "frames", "out"),
)


def scaled_input(loaded: LoadedConfig, camera: str) -> ModelInput | None:
    """The size a camera's frames are scaled to here: the one every reader of
    its pixels declared (the detector's letterbox, when it reads alone); None
    for full frames, when a reader needs them or the camera says so."""
    if not loaded.config.cameras[camera].decode.scale_to_model:
        return None
    size: ModelInput | None = scaled_size(loaded.registry.kinds(), loaded, camera)
    return size


def _plan(context: PlanContext, instance: Instance) -> StagePlan:
    camera, decode = instance.target, instance.config.decode
    name = f"decode.{camera}"
    model = scaled_input(context.loaded, camera)
    shm = decode.shared_memory and context.local(name, "frames")
    prefix = ring_prefix(context.runtime_dir) if shm else None
    return StagePlan(name, lambda: _decode_stage(camera, decode, prefix, model))


def _decode_stage(
    camera: str, decode: DecodeConfig, prefix: str | None, model: ModelInput | None
) -> Stage:
    """Imported here, in the decode process only (PyAV, OpenCV)."""
    from stages.decode.stage import DecodeStage

    return DecodeStage(camera, decode, prefix, model)


def _metrics(name: str, stats: StatsView, _chain: StatsView) -> Iterable[Sample]:
    camera = name.partition(".")[2]
    decode = read_stats(stats, DecodeStats)
    yield frames_through("decode", camera, decode.frames)
    for reason, count in (
        ("behind", decode.frames_dropped_behind),
        ("packets_lost", decode.frames_dropped_gap),
    ):
        yield frames_dropped(camera, reason, count)
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
    scope="camera",
    instances=each_camera(),
    plan=_plan,
    ports=PORTS,
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
    restarts_feeders=("packets",),
    metrics=_metrics,
    summary=_summary,
)


def register(registry: Registry) -> None:
    registry.register(KIND)
