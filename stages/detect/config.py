"""The detect stage's config: the model and how it runs (``detector``), and each
camera's class filters and thresholds (``cameras.<name>.detect``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from pipeline.configtypes import ConfigPath, Share, StrictModel
from pipeline.detections import Detections


class DetectorConfig(StrictModel):
    model: str = Field(
        default="yolo11n.onnx",
        description="Model file: a name looked up in the model directories, or a path.",
    )
    imgsz: int = Field(
        default=640, ge=32, le=4096, description="Inference size (long side)."
    )
    max_batch: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Most frames per inference call (default: 1 for ONNX Runtime "
        "on a CPU with two or more inference streams, where batching only costs "
        "cache; 4 elsewhere; docs/benchmarks.md §10).",
    )
    max_wait_ms: float = Field(
        default=5.0, ge=0, le=1000, description="Wait this long to fill a batch."
    )
    confidence: float = Field(
        default=0.25, gt=0, lt=1, description="Minimum confidence."
    )
    iou: float = Field(default=0.7, gt=0, le=1, description="NMS IoU threshold.")
    max_det: int = Field(
        default=300, ge=1, le=10_000, description="Detections kept per frame."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="auto: the GPU when the model's runtime has one (onnxruntime-gpu, "
        "CUDA PyTorch, TensorRT), else CPU.",
    )
    half: bool = Field(
        default=False,
        description="fp16 inference for .pt models on CUDA (exported models carry "
        "their own precision).",
    )
    overlap: bool = Field(
        default=False,
        description="Prepare the next batch while the model runs the current one "
        "(for many-core and GPU boxes; on 2 cores it costs batch size: "
        "docs/benchmarks.md).",
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Inference threads, shared by the streams (default: all cores).",
    )
    streams: int | None = Field(
        default=None,
        ge=1,
        le=16,
        description="Batches inferred at once, each by its own copy of the model on "
        "threads/streams threads (default: 2 for ONNX Runtime on a CPU with 2+ "
        "threads, else 1; docs/benchmarks.md §8, §9).",
    )
    compile: Literal["onnx", "openvino", "engine"] | None = Field(
        default=None,
        description="Compile the .pt model at start into this format (engine: "
        "TensorRT) through the model cache: reused while the model, GPU, runtime "
        "versions and settings are unchanged, rebuilt when any changes or the "
        "cached file is corrupt.",
    )
    precision: Literal["fp32", "fp16", "int8"] = Field(
        default="fp32", description="Precision of the compiled model."
    )
    calibration: ConfigPath | None = Field(
        default=None,
        description="Folder of calibration images (precision int8).",
    )
    max_drift: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="Refuse an int8 build whose detections differ more than this "
        "(1 - F1) from the full-precision model on the calibration images.",
    )
    classifier: ClassifierConfig | None = Field(
        default=None,
        description="Classify detection crops with an Ultralytics -cls model.",
    )
    cache_dir: ConfigPath | None = Field(
        default=None,
        description="Model cache folder (default: $FRAMECHAIN_CACHE or "
        "~/.cache/framechain).",
    )

    @model_validator(mode="after")
    def _compile_settings(self) -> DetectorConfig:
        if self.precision != "fp32" and self.compile is None:
            raise ValueError(
                "precision applies to compiled models; set compile (onnx, openvino "
                "or engine), or use half: true for a .pt on CUDA"
            )
        if self.precision == "int8" and self.calibration is None:
            raise ValueError("precision int8 needs calibration: a folder of images")
        return self

    @field_validator("imgsz")
    @classmethod
    def _stride_multiple(cls, value: int) -> int:
        if value % 32:
            raise ValueError(
                f"imgsz must be a multiple of 32, e.g. {value // 32 * 32 or 32}"
            )
        return value


class CameraDetectConfig(StrictModel):
    classes: list[str] | None = Field(
        default=None, description="Class names kept for this camera (default: all)."
    )
    confidence: Share | dict[str, Share] | None = Field(
        default=None,
        description="Minimum confidence for this camera: one value or per class name.",
    )


class CameraFilter:
    """Per-camera class filter and per-class thresholds as two lookup arrays."""

    def __init__(self, config: CameraDetectConfig, names: Sequence[str], base: float):
        index = {name: i for i, name in enumerate(names)}
        self.allowed = np.ones(len(names), bool)
        if config.classes is not None:
            self.allowed[:] = False
            self.allowed[[index[n] for n in config.classes]] = True
        self.threshold = np.full(len(names), base, np.float32)
        if isinstance(config.confidence, float):
            self.threshold[:] = config.confidence
        elif isinstance(config.confidence, dict):
            for name, value in config.confidence.items():
                self.threshold[index[name]] = value

    def apply(self, detections: Detections) -> Detections:
        if not len(detections):
            return detections
        ids = detections.class_id
        keep = self.allowed[ids] & (detections.confidence >= self.threshold[ids])
        return detections if keep.all() else detections[keep]


class MotionConfig(StrictModel):
    pixel_threshold: int = Field(
        default=25, ge=1, le=255, description="Grey-level change that counts."
    )
    min_area: float = Field(
        default=0.002,
        gt=0,
        lt=1,
        description="Fraction of the frame that must change to count as motion.",
    )
    width: int = Field(
        default=160, ge=32, le=1920, description="Analysis width in pixels."
    )
    background_rate: float = Field(
        default=0.2,
        gt=0,
        le=1,
        description="How fast the background follows the scene (per frame).",
    )
    hangover_frames: int = Field(
        default=3,
        ge=0,
        le=1000,
        description="Frames still detected after motion stops.",
    )
    refresh_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="Detect at least this often, motion or not.",
    )


class ClassifierConfig(StrictModel):
    model: str = Field(
        description="Ultralytics -cls ONNX export: a name in the model directories, "
        "or a path."
    )
    classes: list[str] | None = Field(
        default=None,
        description="Detector classes whose crops are classified (default: all).",
    )
    min_size_px: int = Field(
        default=24,
        ge=4,
        le=4096,
        description="Smaller boxes (either side) are skipped.",
    )
    max_per_frame: int = Field(
        default=32, ge=1, le=1024, description="Most crops classified per frame."
    )
    threads: int | None = Field(
        default=None, ge=1, le=256, description="Inference threads."
    )
