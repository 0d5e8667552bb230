"""Ultralytics YOLO models on ONNX Runtime: metadata, letterbox, batch preprocessing
and NMS, matching Ultralytics' own predictor (same letterbox rounding, class-aware NMS
with the same offset, boxes scaled back the same way) so results agree with it.

onnxruntime is imported only when a model is loaded, so a missing runtime fails with
one line when the detect stage starts, not at import.
"""

from __future__ import annotations

import ast
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.detections import Detections
from pipeline.errors import BackendUnavailableError, ModelFormatError

log = logging.getLogger(__name__)

PAD_VALUE = 114
MAX_WH = 7680  # Ultralytics' per-class box offset for class-aware NMS


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How one source frame maps into a model input: resize to (new_w, new_h), then
    pad to (input_h, input_w) with ``left``/``top`` pixels before the image."""

    src_h: int
    src_w: int
    new_h: int
    new_w: int
    top: int
    left: int
    input_h: int
    input_w: int

    @classmethod
    def fit(
        cls, src_h: int, src_w: int, imgsz: tuple[int, int], stride: int, minimal: bool
    ) -> Letterbox:
        """Ultralytics' ``LetterBox``: scale to fit ``imgsz`` (h, w) keeping aspect,
        pad to it, or only to the next ``stride`` multiple when ``minimal``."""
        r = min(imgsz[0] / src_h, imgsz[1] / src_w)
        new_w, new_h = max(round(src_w * r), 1), max(round(src_h * r), 1)
        dw, dh = imgsz[1] - new_w, imgsz[0] - new_h
        if minimal:
            dw, dh = dw % stride, dh % stride
        top, bottom = round(dh / 2 - 0.1), round(dh / 2 + 0.1)
        left, right = round(dw / 2 - 0.1), round(dw / 2 + 0.1)
        return cls(
            src_h,
            src_w,
            new_h,
            new_w,
            top,
            left,
            new_h + top + bottom,
            new_w + left + right,
        )

    def to_source(self, xyxy: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Map boxes from model-input pixels back to source pixels, clipped."""
        out = xyxy.copy()
        out[:, [0, 2]] = (out[:, [0, 2]] - self.left) / (self.new_w / self.src_w)
        out[:, [1, 3]] = (out[:, [1, 3]] - self.top) / (self.new_h / self.src_h)
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, self.src_w)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, self.src_h)
        return out


def preprocess(
    images: Sequence[npt.NDArray[np.uint8]], boxes: Sequence[Letterbox]
) -> npt.NDArray[np.float32]:
    """Letterbox BGR uint8 images into one (n, 3, H, W) RGB float32 tensor in [0, 1].

    All ``boxes`` must share one input size. The colour swap, transpose and scaling are
    done once for the whole batch.
    """
    input_h, input_w = boxes[0].input_h, boxes[0].input_w
    batch = np.full((len(images), input_h, input_w, 3), PAD_VALUE, np.uint8)
    for i, (image, box) in enumerate(zip(images, boxes, strict=True)):
        if (box.new_h, box.new_w) != image.shape[:2]:
            image = cv2.resize(
                image, (box.new_w, box.new_h), interpolation=cv2.INTER_LINEAR
            )
        batch[i, box.top : box.top + box.new_h, box.left : box.left + box.new_w] = image
    tensor = np.ascontiguousarray(
        batch[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32
    )
    tensor /= 255.0
    return tensor


def postprocess(
    output: npt.NDArray[np.float32],
    box: Letterbox,
    conf: float,
    iou: float,
    max_det: int,
) -> Detections:
    """Decode one image's raw head output (4 + classes, anchors): confidence filter,
    best class per box, class-aware NMS, boxes back to source pixels."""
    scores = output[4:]
    best = scores.max(axis=0)
    candidates = np.flatnonzero(best > conf)
    if candidates.size == 0:
        return Detections.empty()
    class_id = scores[:, candidates].argmax(axis=0).astype(np.int32)
    confidence = best[candidates].astype(np.float32)
    cx, cy, w, h = output[:4, candidates]
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    offset = class_id[:, None].astype(np.float32) * MAX_WH
    shifted = (xyxy + offset).astype(np.float64)
    xywh = np.concatenate([shifted[:, :2], shifted[:, 2:] - shifted[:, :2]], axis=1)
    keep = cv2.dnn.NMSBoxes(xywh, confidence.astype(np.float64), conf, iou)
    keep = np.asarray(keep, np.int64).reshape(-1)[:max_det]
    return Detections(
        xyxy=box.to_source(xyxy[keep].astype(np.float32)),
        confidence=confidence[keep],
        class_id=class_id[keep],
    )


def _parse_metadata(
    meta: dict[str, str], path: Path
) -> tuple[tuple[str, ...], int, str]:
    if "names" not in meta:
        raise ModelFormatError(
            f"{path.name} is not an Ultralytics YOLO export (no class names in its "
            "metadata); export the model with Ultralytics (yolo export format=onnx)"
        )
    try:
        names_map = ast.literal_eval(meta["names"])
        names = tuple(str(names_map[i]) for i in range(len(names_map)))
        stride = int(ast.literal_eval(meta.get("stride", "32")))
    except (ValueError, SyntaxError, KeyError, TypeError) as e:
        raise ModelFormatError(
            f"{path.name}: unreadable Ultralytics metadata ({e})"
        ) from e
    return names, stride, meta.get("task", "detect")


def read_class_names(path: Path) -> tuple[str, ...]:
    """Class names from a model's metadata, without building an inference session."""
    return _load_session(path, threads=1, build=False)[1]


def _providers(ort: Any, device: str) -> list[str]:
    """Execution providers for ``device``: cpu, cuda, or auto (CUDA when the
    installed onnxruntime has it, e.g. onnxruntime-gpu in the CUDA image)."""
    available = ort.get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise BackendUnavailableError(
            "detector.device is cuda but this onnxruntime has no CUDA provider; "
            "pip install onnxruntime-gpu (and the CUDA 12 runtime), or use device: cpu"
        )
    if device != "cpu" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _load_session(
    path: Path, threads: int, build: bool = True, device: str = "cpu"
) -> tuple[Any, tuple[str, ...], int, str]:
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise BackendUnavailableError(
            "onnxruntime is not installed; pip install onnxruntime (CPU) or "
            "onnxruntime-gpu (CUDA)"
        ) from e
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if os.environ.get("FRAMECHAIN_ORT_SPIN") == "0":
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not build:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(
            str(path), options, providers=_providers(ort, device)
        )
    except Exception as e:  # ORT raises its own untyped errors for bad files
        raise ModelFormatError(
            f"{path.name} is not a loadable ONNX model "
            f"({str(e).splitlines()[0][:200]}); "
            "re-export it or check the file is complete"
        ) from e
    names, stride, task = _parse_metadata(
        session.get_modelmeta().custom_metadata_map, path
    )
    return session, names, stride, task


class OnnxYolo:
    """An Ultralytics YOLO detector on ONNX Runtime (CPU).

    Attributes:
        names: class names by id, from the model's metadata.
        dynamic: whether the model accepts any batch and image size.
    """

    def __init__(
        self, path: Path, imgsz: int, threads: int | None = None, device: str = "cpu"
    ) -> None:
        self.path = path
        threads = threads or os.cpu_count() or 1
        self.session, self.names, self.stride, task = _load_session(
            path, threads, device=device
        )
        if task != "detect":
            raise ModelFormatError(
                f"{path.name} is a {task} model; "
                "the ONNX detect backend runs detect models"
            )
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        batch, _, height, width = model_input.shape
        self.dynamic = not (isinstance(height, int) and isinstance(width, int))
        self.max_batch = batch if isinstance(batch, int) else None
        self.imgsz = (imgsz, imgsz) if self.dynamic else (int(height), int(width))
        outputs = self.session.get_outputs()[0].shape
        if isinstance(outputs[1], int) and outputs[1] != 4 + len(self.names):
            raise ModelFormatError(
                f"{path.name}: output has {outputs[1]} channels, expected "
                f"{4 + len(self.names)} (4 box + {len(self.names)} classes); "
                "only YOLOv8/YOLO11-style detection heads are supported"
            )
        log.info(
            "loaded %s: %d classes, %s input, %d threads",
            path.name,
            len(self.names),
            "dynamic" if self.dynamic else self.imgsz,
            threads,
        )

    def warm_up(self) -> None:
        """One inference on zeros, so the first real frames do not pay for the
        runtime's lazy initialisation."""
        side = max(self.imgsz)
        self.infer(
            np.zeros(
                (1, 3, side, side) if not self.dynamic else (1, 3, side // 2, side),
                np.float32,
            )
        )

    def letterbox(self, src_h: int, src_w: int) -> Letterbox:
        return Letterbox.fit(
            src_h, src_w, self.imgsz, self.stride, minimal=self.dynamic
        )

    def infer(self, tensor: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Run the model on a (n, 3, H, W) tensor, chunked to a static batch size."""
        step = self.max_batch or len(tensor)
        outputs = [
            self.session.run(None, {self.input_name: tensor[i : i + step]})[0]
            for i in range(0, len(tensor), step)
        ]
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)
