"""What every backend shares: the model's metadata, its input geometry, batching to a
fixed batch size, warm-up and the output-shape check."""

from __future__ import annotations

import ast
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from pipeline.errors import ModelFormatError

if TYPE_CHECKING:
    from stages.detect.letterbox import Letterbox

log = logging.getLogger(__name__)

TASKS = ("detect", "segment", "classify")
MASK_COEFFICIENTS = 32  # YOLOv8/YOLO11 segmentation heads


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """An Ultralytics model's metadata.

    Attributes:
        names: class names by id.
        task: ``detect`` or ``segment``.
        stride: the model's largest stride (input sizes are multiples of it).
        imgsz: the fixed input (h, w), or None when the input size is dynamic.
        batch: the fixed batch size, or None when the batch is dynamic.
    """

    names: tuple[str, ...]
    task: str
    stride: int = 32
    imgsz: tuple[int, int] | None = None
    batch: int | None = None

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any], path: Path) -> ModelInfo:
        """From Ultralytics' export metadata (ONNX strings, OpenVINO YAML or
        TensorRT JSON: values may be Python literals in strings)."""
        if "names" not in meta:
            raise ModelFormatError(
                f"{path.name} is not an Ultralytics YOLO export (no class names in its "
                "metadata); export it with `framechain export` or `yolo export`"
            )
        try:
            names_map = _literal(meta["names"])
            names = tuple(str(names_map[k]) for k in sorted(names_map, key=int))
            stride = int(_literal(meta.get("stride", 32)))
            task = str(meta.get("task", "detect"))
            args = _literal(meta.get("args", {})) or {}
            imgsz = _literal(meta.get("imgsz")) if not args.get("dynamic") else None
            batch = (
                int(_literal(meta.get("batch", 1))) if not args.get("dynamic") else None
            )
        except (ValueError, SyntaxError, KeyError, TypeError) as e:
            raise ModelFormatError(
                f"{path.name}: unreadable Ultralytics metadata ({e})"
            ) from e
        if task not in TASKS:
            raise ModelFormatError(
                f"{path.name} is a {task} model; framechain runs detect, segment "
                "and (on crops) classify models"
            )
        return cls(
            names,
            task,
            stride,
            (int(imgsz[0]), int(imgsz[1])) if imgsz else None,
            batch,
        )


def _literal(value: Any) -> Any:
    return ast.literal_eval(value) if isinstance(value, str) else value


class YoloBackend(ABC):
    """A loaded model: ``infer`` maps a letterboxed batch to raw outputs.

    Attributes:
        info: the model's metadata.
        imgsz: the input size used (h, w): the model's own when fixed, else the
            configured size (and letterboxing pads only to the stride).
        dynamic: whether the input size is dynamic.
        max_batch: the most images per model call (a fixed-batch model's batch).
    """

    runtime: str = ""

    def __init__(self, path: Path, info: ModelInfo, imgsz: int) -> None:
        self.path = path
        self.info = info
        self.dynamic = info.imgsz is None
        self.imgsz: tuple[int, int] = (
            (imgsz, imgsz) if info.imgsz is None else info.imgsz
        )
        self.max_batch = info.batch

    @property
    def names(self) -> tuple[str, ...]:
        return self.info.names

    @property
    def stride(self) -> int:
        return self.info.stride

    @property
    def task(self) -> str:
        return self.info.task

    def letterbox(self, src_h: int, src_w: int) -> Letterbox:
        from stages.detect.letterbox import ModelInput

        return ModelInput(self.imgsz, self.stride, self.dynamic).fit(src_h, src_w)

    @abstractmethod
    def _run(self, tensor: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
        """One model call on at most ``max_batch`` images: its outputs, as arrays."""

    def infer(self, tensor: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
        """Raw outputs for a (n, 3, H, W) batch, chunked to the model's batch size:
        ``[head]`` for detection, ``[head, prototypes]`` for segmentation."""
        step = self.max_batch or len(tensor)
        chunks = [self._run(tensor[i : i + step]) for i in range(0, len(tensor), step)]
        if len(chunks) == 1:
            return chunks[0]
        return [np.concatenate(parts) for parts in zip(*chunks, strict=True)]

    def warm_up(self) -> None:
        """One inference on zeros, so the first real frames do not pay for the
        runtime's lazy initialisation; it also checks the outputs' shapes."""
        h, w = self.imgsz
        if self.dynamic and self.task != "classify":
            # a letterboxed wide frame, the common case; still a stride multiple
            # (imgsz 416 or 160 halved is not, and the model's concats refuse it)
            h = max(self.stride, h // 2 // self.stride * self.stride)
        outputs = self.infer(np.zeros((1, 3, h, w), np.float32))
        self.check_outputs(outputs)
        log.info(
            "loaded %s on %s: %s, %d classes, %s input",
            self.path.name,
            self.runtime,
            self.task,
            len(self.names),
            "dynamic" if self.dynamic else f"{self.imgsz[1]}x{self.imgsz[0]}",
        )

    def check_outputs(self, outputs: list[npt.NDArray[np.float32]]) -> None:
        if self.task == "classify":
            if outputs[0].ndim != 2 or outputs[0].shape[1] != len(self.names):
                raise ModelFormatError(
                    f"{self.path.name}: output shape {outputs[0].shape}, expected "
                    f"(n, {len(self.names)}) class probabilities"
                )
            return
        channels = 4 + len(self.names)
        if self.task == "segment":
            channels += MASK_COEFFICIENTS
            if len(outputs) < 2 or outputs[1].ndim != 4:
                raise ModelFormatError(
                    f"{self.path.name}: a segment model must output mask prototypes"
                )
        if outputs[0].ndim != 3 or outputs[0].shape[1] != channels:
            raise ModelFormatError(
                f"{self.path.name}: output shape {outputs[0].shape}, expected "
                f"(n, {channels}, anchors); only YOLOv8/YOLO11-style heads exported "
                "without NMS are supported"
            )
