"""Compiling models: ``framechain export`` and ``detector.compile``.

Wraps Ultralytics' exporter (ONNX, OpenVINO, TensorRT; image size, batch, dynamic
shapes, fp16, int8) behind the model cache (``stages.detect.modelcache``), and refuses
an int8 build whose detections drift too far from the full-precision model on the
calibration images: Ultralytics' own Jetson guide shows int8 halving mAP, and a
quantised model that quietly misses half the people is worse than a slower one.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from pipeline.detections import box_iou
from pipeline.errors import BackendUnavailableError, ModelFormatError
from stages.detect.modelcache import CacheEntry, CompileSpec, ModelCache
from stages.detect.models import keep_ultralytics_offline

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
INSTALL = "pip install 'framechain[ultralytics]'"


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "absent"


def platform_facts(spec: CompileSpec) -> dict[str, str]:
    """What a compiled model depends on besides its source and spec: the exporter
    and runtime versions, and for TensorRT the GPU and its compute capability."""
    facts = {"ultralytics": _version("ultralytics")}
    if spec.format == "onnx":
        facts["onnx"] = _version("onnx")
    elif spec.format == "openvino":
        facts["openvino"] = _version("openvino")
        if spec.precision == "int8":
            facts["nncf"] = _version("nncf")
    else:
        facts.update(_gpu_facts())
    return facts


def _gpu_facts() -> dict[str, str]:
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendUnavailableError(
            "building a TensorRT engine needs TensorRT; pip install tensorrt-cu12 "
            "(x86_64) or use JetPack's TensorRT (Jetson)"
        ) from e
    try:
        import torch

        if not torch.cuda.is_available():
            raise BackendUnavailableError(
                "building a TensorRT engine needs an NVIDIA GPU; none is visible"
            )
        major, minor = torch.cuda.get_device_capability()
        name = torch.cuda.get_device_name()
    except ImportError as e:
        raise BackendUnavailableError(
            f"building a TensorRT engine needs Ultralytics and PyTorch; {INSTALL}"
        ) from e
    return {
        "tensorrt": trt.__version__,
        "gpu": name,
        "compute_capability": f"{major}.{minor}",
    }


def calibration_images(folder: Path, limit: int = 500) -> list[Path]:
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ModelFormatError(
            f"no calibration images (.jpg/.png) in {folder}; int8 needs a few hundred "
            "frames from the cameras it will watch"
        )
    return images[:limit]


def build_with_ultralytics(source: Path, spec: CompileSpec, work: Path) -> Path:
    """The model builder behind the cache: Ultralytics' exporter on a copy of the
    source (it writes beside its input), inside ``work``."""
    keep_ultralytics_offline()
    try:
        import ultralytics.data.utils as ultralytics_data
        from ultralytics import YOLO
    except ImportError as e:
        raise BackendUnavailableError(
            f"exporting models needs Ultralytics and PyTorch; {INSTALL}"
        ) from e
    # Its dataset check fetches a plotting font from GitHub whatever YOLO_OFFLINE
    # says (an int8 calibration run tried github.com); calibration plots nothing.
    ultralytics_data.check_font = lambda *_args, **_kwargs: None
    if source.suffix != ".pt":
        raise ModelFormatError(
            f"{source.name}: export starts from an Ultralytics .pt checkpoint "
            "(the .onnx it came from has lost the training graph); pass the .pt"
        )
    copy = work / source.name
    shutil.copy2(source, copy)
    options: dict[str, Any] = {
        "format": spec.format,
        "imgsz": spec.imgsz,
        "batch": spec.batch,
        "dynamic": spec.dynamic,
        "half": spec.precision == "fp16",
        "int8": spec.precision == "int8",
        "verbose": False,
    }
    if spec.format == "onnx":
        options["simplify"] = False  # onnxslim is optional; never fetch it
    if spec.precision == "int8":
        if spec.calibration is None:
            raise ModelFormatError("int8 needs calibration images (--data FOLDER)")
        options["data"] = str(_calibration_dataset(Path(spec.calibration), work))
    try:
        exported = YOLO(str(copy)).export(**options)
    except Exception as e:  # the exporter raises anything from its dependencies
        raise ModelFormatError(
            f"exporting {source.name} to {spec.format} failed: "
            f"{str(e).splitlines()[0][:300] if str(e) else type(e).__name__}"
        ) from e
    return Path(exported)


def _calibration_dataset(folder: Path, work: Path) -> Path:
    """A dataset YAML over the calibration images (no labels: calibration only
    looks at activations), as Ultralytics' int8 exporters want."""
    images = calibration_images(folder)
    work = work.resolve()  # Ultralytics resolves relative paths against "path"
    listing = work / "calibration.txt"
    listing.write_text("".join(f"{p.resolve()}\n" for p in images))
    data = work / "calibration.yaml"
    data.write_text(
        yaml.safe_dump(
            {
                "path": str(work),
                "train": str(listing),
                "val": str(listing),
                "names": {0: "object"},
            }
        )
    )
    return data


@dataclass(frozen=True, slots=True)
class Drift:
    """How far a candidate model's detections are from a reference's.

    Attributes:
        recall: reference detections the candidate also found (same class, IoU ≥ 0.5).
        precision: candidate detections the reference also found.
        mean_iou: mean IoU of the matched pairs.
        confidence_mae: mean absolute confidence difference of the matched pairs.
        images: images compared.
    """

    recall: float
    precision: float
    mean_iou: float
    confidence_mae: float
    images: int

    @property
    def drift(self) -> float:
        """1 − F1 of the match: 0 when the detections agree, 1 when none do."""
        total = self.recall + self.precision
        return 1.0 - (2 * self.recall * self.precision / total if total else 0.0)

    def describe(self) -> str:
        return (
            f"drift {self.drift:.3f} (recall {self.recall:.3f}, precision "
            f"{self.precision:.3f}, matched IoU {self.mean_iou:.3f}, confidence "
            f"error {self.confidence_mae:.3f}) over {self.images} images"
        )


def measure_drift(
    reference: Any, candidate: Any, images: list[np.ndarray], conf: float = 0.25
) -> Drift:
    """Run both backends on the same BGR images and match their detections."""
    from stages.detect.yolo import postprocess, preprocess

    found = wanted = kept = 0
    ious: list[float] = []
    conf_errors: list[float] = []
    for image in images:
        outputs = []
        for backend in (reference, candidate):
            box = backend.letterbox(*image.shape[:2])
            raw = backend.infer(preprocess([image], [box]))
            outputs.append(
                postprocess(raw[0][0], box, conf, 0.7, 300, len(backend.names))
            )
        ref, cand = outputs
        wanted += len(ref)
        kept += len(cand)
        if not len(ref) or not len(cand):
            continue
        iou = box_iou(ref.xyxy, cand.xyxy)
        iou[ref.class_id[:, None] != cand.class_id[None, :]] = 0
        taken: set[int] = set()
        for i in np.argsort(-ref.confidence):
            row = iou[i].copy()
            row[list(taken)] = 0
            j = int(row.argmax())
            if row[j] >= 0.5:
                taken.add(j)
                found += 1
                ious.append(float(iou[i, j]))
                conf_errors.append(abs(float(ref.confidence[i] - cand.confidence[j])))
    return Drift(
        recall=found / wanted if wanted else 1.0,
        precision=found / kept if kept else 1.0,
        mean_iou=float(np.mean(ious)) if ious else 0.0,
        confidence_mae=float(np.mean(conf_errors)) if conf_errors else 0.0,
        images=len(images),
    )


def compile_model(
    source: Path,
    spec: CompileSpec,
    cache_dir: Path,
    max_drift: float = 0.1,
    builder: Any = build_with_ultralytics,
) -> tuple[CacheEntry, Drift | None]:
    """The compiled model for ``source`` from the cache, built on a miss. An int8
    build is compared with the source model on the calibration images first; past
    ``max_drift`` it is removed from the cache and refused, with the numbers."""
    cache = ModelCache(cache_dir)
    entry = cache.get(source, spec, platform_facts(spec), builder)
    drift = None
    if spec.precision == "int8" and spec.calibration is not None:
        drift = int8_drift(source, entry.path, Path(spec.calibration), spec.imgsz)
        log.info("int8 %s: %s", entry.path.name, drift.describe())
        if drift.drift > max_drift:
            cache.invalidate(entry.path)
            raise ModelFormatError(
                f"int8 build of {source.name} refused: {drift.describe()}, above "
                f"the {max_drift} allowed; use fp16, more representative calibration "
                "images, or raise --max-drift"
            )
    return entry, drift


def int8_drift(source: Path, compiled: Path, folder: Path, imgsz: int) -> Drift:
    from stages.detect.backends import load_backend

    images = [cv2.imread(str(p)) for p in calibration_images(folder, limit=50)]
    reference = load_backend(source, imgsz, device="cpu")
    candidate = load_backend(compiled, imgsz, device="auto")
    return measure_drift(reference, candidate, [i for i in images if i is not None])
