"""A secondary classifier on detection crops (an Ultralytics ``-cls`` ONNX export):
helmet / no helmet, vehicle type, uniform, whatever it was trained on.

It runs inside the detect process, right after detection, on the frame pixels that
process already holds, batched over every crop of the batch: no extra hop and no
extra copy of the frame. Only the configured classes, above a minimum size and up to
a per-frame cap, are classified; the rest carry no label. Preprocessing is
Ultralytics' classification transform (shortest side to the input size, centre
crop, RGB, [0, 1]), so labels match its predictor on the same crops.

The track stage keeps each track's most frequent label (weighted by score), and the
events of the track carry it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.errors import ModelFormatError
from stages.detect.config import ClassifierConfig

log = logging.getLogger(__name__)


class CropClassifier:
    """An image classifier applied to boxes of frames.

    Attributes:
        names: the classifier's labels by id, from its metadata.
        size: its square input size.
    """

    def __init__(self, path: Path, threads: int | None = None) -> None:
        from stages.detect.backends.base import ModelInfo
        from stages.detect.backends.onnx import OnnxBackend

        if path.suffix != ".onnx":
            raise ModelFormatError(
                f"{path.name}: the classifier runs Ultralytics -cls ONNX exports "
                "(framechain export MODEL-cls.pt --format onnx)"
            )
        self._backend = OnnxBackend(path, 224, threads, device="cpu")
        info: ModelInfo = self._backend.info
        if info.task != "classify":
            raise ModelFormatError(
                f"{path.name} is a {info.task} model; the classifier needs an "
                "Ultralytics -cls export"
            )
        meta = self._backend.session.get_modelmeta().custom_metadata_map
        trained = ModelInfo.from_metadata({**meta, "args": "{}"}, path).imgsz
        self.names = info.names
        self.size = info.imgsz[0] if info.imgsz else (trained or (224, 224))[0]
        if self._backend.dynamic:
            self._backend.imgsz = (self.size, self.size)
        self._backend.warm_up()

    def preprocess(self, crops: list[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        """BGR crops to a (n, 3, size, size) RGB float tensor: shortest side to
        ``size`` (area averaging when shrinking, bilinear when enlarging, as PIL's
        antialiased resize does), then the centre square."""
        size = self.size
        batch = np.empty((len(crops), size, size, 3), np.uint8)
        for i, crop in enumerate(crops):
            h, w = crop.shape[:2]
            scale = size / min(h, w)
            new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
            shrink = scale < 1
            resized = cv2.resize(
                crop,
                (new_w, new_h),
                interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR,
            )
            top, left = (new_h - size) // 2, (new_w - size) // 2
            batch[i] = resized[top : top + size, left : left + size]
        tensor = np.ascontiguousarray(
            batch[..., ::-1].transpose(0, 3, 1, 2), np.float32
        )
        tensor /= 255.0
        return tensor

    def classify(
        self, crops: list[npt.NDArray[np.uint8]]
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
        """(label id, probability) of each crop."""
        if not crops:
            return np.empty(0, np.int32), np.empty(0, np.float32)
        probabilities = self._backend.infer(self.preprocess(crops))[0]
        labels = probabilities.argmax(axis=1).astype(np.int32)
        return labels, probabilities[np.arange(len(labels)), labels].astype(np.float32)


def crops_to_classify(
    image: npt.NDArray[np.uint8],
    xyxy: npt.NDArray[np.float32],
    class_id: npt.NDArray[np.int32],
    wanted: npt.NDArray[np.int32] | None,
    config: ClassifierConfig,
) -> tuple[list[int], list[npt.NDArray[np.uint8]]]:
    """Which detections of a frame get classified, and their crops (views)."""
    height, width = image.shape[:2]
    rows, crops = [], []
    for i, (box, cls) in enumerate(zip(xyxy.tolist(), class_id.tolist(), strict=True)):
        if wanted is not None and cls not in wanted:
            continue
        x1, y1 = max(0, int(box[0])), max(0, int(box[1]))
        x2, y2 = min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))
        if min(x2 - x1, y2 - y1) < config.min_size_px:
            continue
        rows.append(i)
        crops.append(image[y1:y2, x1:x2])
        if len(rows) == config.max_per_frame:
            break
    return rows, crops


def label_columns(
    count: int, rows: list[int], labels: Any, scores: Any
) -> dict[str, np.ndarray]:
    """``label`` (-1: not classified) and ``label_score`` columns for n detections."""
    label = np.full(count, -1, np.int32)
    score = np.zeros(count, np.float32)
    if rows:
        label[rows] = labels
        score[rows] = scores
    return {"label": label, "label_score": score}
