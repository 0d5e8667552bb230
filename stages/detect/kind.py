"""The detect kind: one process for every camera (it batches across them), and the
checks that resolve its model when a config loads."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import LoadedConfig, ResolveContext
from pipeline.errors import ConfigError, FramechainError, ModelFormatError
from pipeline.metrics import frames_dropped
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
from pipeline.stageplan import StagePlan
from pipeline.topology import FULL_FRAMES, Port, pixel_needs
from stages.detect.config import CameraDetectConfig, DetectorConfig
from stages.detect.letterbox import ModelInput
from stages.detect.models import model_directories, resolve_model
from stages.detect.stats import DetectStats

KIND_NAME = "detect"


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """What loading a config found out about its models."""

    model_path: Path
    class_names: tuple[str, ...]
    task: str
    input: ModelInput
    classifier_path: Path | None = None


def resolved_model(loaded: LoadedConfig) -> ResolvedModel:
    """The detector model a loaded config resolved."""
    model: ResolvedModel = loaded.resolved[KIND_NAME]
    return model


def _resolve(context: ResolveContext) -> ResolvedModel:
    """The model file and its metadata, the classifier's, and the class names the
    detect config refers to.

    Raises:
        ConfigError: a model is missing or of the wrong kind, or a class is unknown.
    """
    from stages.detect.backends import read_model_info

    config = context.config
    detector = config.detector
    directories = model_directories(
        config.models_dir, context.environ, context.base_dir
    )
    try:
        model_path = resolve_model(detector.model, directories)
        if detector.compile and model_path.suffix != ".pt":
            raise ModelFormatError(
                f"detector.compile builds from an Ultralytics .pt checkpoint, and "
                f"{model_path.name} is not one; give the .pt, or drop compile"
            )
        info = read_model_info(model_path)
        if info.task == "classify":
            raise ModelFormatError(
                f"{model_path.name} is a classify model; give a detect or segment "
                "model here, and the classifier under detector.classifier"
            )
    except FramechainError as e:
        raise ConfigError(context.problem(("detector", "model"), str(e))) from None
    classifier_path = None
    classifier = detector.classifier
    if classifier is not None:
        try:
            classifier_path = resolve_model(classifier.model, directories)
            task = read_model_info(classifier_path).task
            if task != "classify":
                raise ModelFormatError(
                    f"{classifier_path.name} is a {task} model; the classifier needs "
                    "an Ultralytics -cls export"
                )
        except FramechainError as e:
            path = ("detector", "classifier", "model")
            raise ConfigError(context.problem(path, str(e))) from None
    wanted: list[tuple[tuple[Any, ...], list[str]]] = []
    if classifier is not None and classifier.classes:
        wanted.append((("detector", "classifier", "classes"), classifier.classes))
    for camera, cam in config.cameras.items():
        if cam.detect.classes:
            wanted.append(
                (("cameras", camera, "detect", "classes"), cam.detect.classes)
            )
        if isinstance(cam.detect.confidence, dict):
            confidence = ("cameras", camera, "detect", "confidence")
            wanted.append((confidence, list(cam.detect.confidence)))
    problems = unknown_classes(context, info.names, wanted)
    if problems:
        raise ConfigError(problems[0], problems)
    model_input = ModelInput.of(info.imgsz, detector.imgsz, info.stride)
    return ResolvedModel(
        model_path, info.names, info.task, model_input, classifier_path
    )


def _pixels(loaded: LoadedConfig, _camera: str) -> Any:
    """The model's input size, or the full frame for the crop classifier."""
    if loaded.config.detector.classifier is not None:
        return FULL_FRAMES
    return resolved_model(loaded).input


def unknown_classes(
    context: ResolveContext,
    names: tuple[str, ...],
    wanted: list[tuple[tuple[Any, ...], list[str]]],
) -> list[str]:
    """One problem per config path that names a class the model does not know."""
    problems = []
    known = set(names)
    for path, classes in wanted:
        unknown = [c for c in classes if c not in known]
        if unknown and known:
            problems.append(
                context.problem(
                    path,
                    f"unknown class {unknown[0]!r}; "
                    f"the model knows {', '.join(names[:8])}, ...",
                )
            )
    return problems


PORTS = (
    Port("frames", "frames", "in"),
    # addressed to each frame's camera: route("detections", camera)
    Port("detections", "detections", "out"),
)


def _plan(context: PlanContext, _instance: Instance) -> StagePlan:
    loaded = context.loaded
    config = loaded.config
    model = resolved_model(loaded)
    cameras = {c: cam.detect for c, cam in config.cameras.items()}
    # the cameras whose pixels a stage after this one reads: sent inline with the
    # detections where they are not in shared memory
    after = context.wiring.downstream(KIND_NAME)
    readers = [k for k in loaded.registry.kinds() if k.name in after]
    pixels = {c for c in config.cameras if pixel_needs(readers, loaded, c)}

    def build() -> Any:
        from stages.detect.stage import DetectStage

        return DetectStage(
            config.detector,
            model.model_path,
            cameras,
            pixels,
            classifier_path=model.classifier_path,
        )

    return StagePlan(KIND_NAME, build)


def _metrics(name: str, stats: StatsView, _chain: StatsView) -> Iterable[Sample]:
    detect = read_stats(stats, DetectStats)
    yield frames_dropped("all", "slot_overwritten", detect.frames_missed)
    if detect.inference is not None:
        yield Sample(
            "inference_seconds",
            "histogram",
            "Inference time per batch",
            {"stage": name},
            detect.inference,
        )


def _summary(_loaded: Any, _target: str, stats: StatsView) -> list[str]:
    if not stats:
        return []
    detect = read_stats(stats, DetectStats)
    gated = detect.frames_gated
    return [
        f"  detect: {detect.frames} frames inferred"
        + (f", {gated} skipped by the motion gate" if gated else "")
        + f", mean batch {detect.mean_batch:.2f}, "
        f"{detect.infer_ms_per_frame:.1f} ms inference per frame"
    ]


KIND = StageKind(
    name=KIND_NAME,
    role="transform",
    scope="single",
    instances=lambda _config: [Instance("")],
    plan=_plan,
    ports=PORTS,
    pixels=_pixels,
    sections=(
        Section(
            "root", "detector", DetectorConfig, "Model.", default_factory=DetectorConfig
        ),
        Section(
            "camera",
            "detect",
            CameraDetectConfig,
            "Per-camera detection filters.",
            default_factory=CameraDetectConfig,
        ),
    ),
    resolve=_resolve,
    metrics=_metrics,
    summary=_summary,
)


def register(registry: Registry) -> None:
    registry.register(KIND)
