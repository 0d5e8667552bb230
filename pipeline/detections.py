"""A columnar detections type shaped like ``supervision.Detections``, owned by us so
the hot path needs neither supervision nor torch. Converters live in ``convert.py``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.masks import BoxMasks


def box_iou(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """(n, m) IoU matrix of two sets of xyxy boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    iou: npt.NDArray[np.float64] = inter / np.maximum(
        area_a[:, None] + area_b[None, :] - inter, 1e-9
    )
    return iou


def _check(name: str, array: np.ndarray, shape: tuple[int, ...]) -> None:
    if array.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {array.shape}")


@dataclass(frozen=True, slots=True)
class Detections:
    """Detections of one frame, one row each.

    Attributes:
        xyxy: (n, 4) float32 boxes in source-frame pixels.
        confidence: (n,) float32 in [0, 1].
        class_id: (n,) int32 model class ids.
        tracker_id: (n,) int64 track ids, or None before tracking (-1: not tracked).
        masks: instance masks (segmentation models), kept inside their boxes, or
            None.
        data: extra per-detection columns, each of length n.
    """

    xyxy: npt.NDArray[np.float32]
    confidence: npt.NDArray[np.float32]
    class_id: npt.NDArray[np.int32]
    tracker_id: npt.NDArray[np.int64] | None = None
    masks: BoxMasks | None = None
    data: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.xyxy)
        _check("xyxy", self.xyxy, (n, 4))
        _check("confidence", self.confidence, (n,))
        _check("class_id", self.class_id, (n,))
        if self.tracker_id is not None:
            _check("tracker_id", self.tracker_id, (n,))
        if self.masks is not None and len(self.masks) != n:
            raise ValueError(f"masks: expected {n} masks, got {len(self.masks)}")
        for key, column in self.data.items():
            if len(column) != n:
                raise ValueError(
                    f"data[{key!r}]: expected length {n}, got {len(column)}"
                )

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(
        self, index: int | slice | np.ndarray | Sequence[int]
    ) -> Detections:
        """Select rows by int, slice, bool mask or index array; always a new object."""
        if isinstance(index, int):
            index = [index]
        return Detections(
            xyxy=self.xyxy[index],
            confidence=self.confidence[index],
            class_id=self.class_id[index],
            tracker_id=None if self.tracker_id is None else self.tracker_id[index],
            masks=None if self.masks is None else self.masks[index],
            data={k: v[index] for k, v in self.data.items()},
        )

    @classmethod
    def empty(cls) -> Detections:
        return cls(
            xyxy=np.empty((0, 4), np.float32),
            confidence=np.empty(0, np.float32),
            class_id=np.empty(0, np.int32),
        )

    @classmethod
    def merge(cls, items: Sequence[Detections]) -> Detections:
        """Concatenate detections; optional columns survive only if all have them."""
        items = [d for d in items if len(d)]
        if not items:
            return cls.empty()

        def cat(name: str) -> Any:
            columns = [getattr(d, name) for d in items]
            return None if any(c is None for c in columns) else np.concatenate(columns)

        masks = [d.masks for d in items if d.masks is not None]

        keys = set.intersection(*(set(d.data) for d in items))
        return cls(
            xyxy=np.concatenate([d.xyxy for d in items]),
            confidence=np.concatenate([d.confidence for d in items]),
            class_id=np.concatenate([d.class_id for d in items]),
            tracker_id=cat("tracker_id"),
            masks=BoxMasks.merge(masks) if len(masks) == len(items) else None,
            data={k: np.concatenate([d.data[k] for d in items]) for k in keys},
        )

    def anchors(self, anchor: str = "bottom_center") -> npt.NDArray[np.float32]:
        """(n, 2) reference points of the boxes: ``center`` or ``bottom_center``."""
        x = (self.xyxy[:, 0] + self.xyxy[:, 2]) / 2
        y: npt.NDArray[np.floating[Any]]
        if anchor == "center":
            y = (self.xyxy[:, 1] + self.xyxy[:, 3]) / 2
        elif anchor == "bottom_center":
            y = self.xyxy[:, 3]
        else:
            raise ValueError(f"unknown anchor {anchor!r}: use center or bottom_center")
        return np.stack([x, y], axis=1).astype(np.float32, copy=False)

    def to_parts(self) -> list[bytes | memoryview]:
        """The wire columns of ``messages.Detected`` (empty list when n == 0):
        three, ``tracker_id`` next when the detections are tracked, then the two
        mask parts when there are masks, then the classifier's ``label`` (int32)
        and ``label_score`` (float32) columns when crops were classified."""
        if not len(self):
            return []
        parts: list[bytes | memoryview] = [
            np.ascontiguousarray(self.xyxy, np.float32).data,
            np.ascontiguousarray(self.confidence, np.float32).data,
            np.ascontiguousarray(self.class_id, np.int32).data,
        ]
        if self.tracker_id is not None:
            parts.append(np.ascontiguousarray(self.tracker_id, np.int64).data)
        if self.masks is not None:
            parts += self.masks.to_parts()
        if "label" in self.data:
            parts.append(np.ascontiguousarray(self.data["label"], np.int32).data)
            parts.append(
                np.ascontiguousarray(self.data["label_score"], np.float32).data
            )
        return parts

    @classmethod
    def from_parts(
        cls,
        count: int,
        parts: Sequence[bytes | memoryview | bytearray],
        tracked: bool = False,
        masks: bool = False,
        labels: bool = False,
    ) -> Detections:
        """Rebuild from wire columns; validates sizes so a bad peer cannot misread."""
        if count == 0:
            return cls.empty()
        columns = 4 if tracked else 3
        label_at = columns + (2 if masks else 0)
        needed = label_at + (2 if labels else 0)
        if len(parts) < needed:
            raise ValueError(f"detections: expected {needed} parts, got {len(parts)}")
        return cls(
            xyxy=np.frombuffer(parts[0], np.float32).reshape(-1, 4),
            confidence=np.frombuffer(parts[1], np.float32),
            class_id=np.frombuffer(parts[2], np.int32),
            tracker_id=np.frombuffer(parts[3], np.int64) if tracked else None,
            masks=(
                BoxMasks.from_parts(count, parts[columns : columns + 2])
                if masks
                else None
            ),
            data=(
                {
                    "label": np.frombuffer(parts[label_at], np.int32),
                    "label_score": np.frombuffer(parts[label_at + 1], np.float32),
                }
                if labels
                else {}
            ),
        )
