"""Instance masks kept inside their boxes, bit-packed.

A full-frame boolean mask per detection costs width × height bytes: 2 MB per person at
1080p, 100 MB for a crowd of fifty, on every hop. Masks only ever matter inside their
box, so each is stored as the box-sized crop (origin and size in source pixels) and
packed to one bit per pixel: a 100×250 person is 3 KB. Two wire parts carry a whole
frame's masks: the int32 (n, 4) ``x, y, w, h`` table and the concatenated bits (each
mask padded to a whole byte).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class BoxMasks:
    """Masks of n detections.

    Attributes:
        boxes: (n, 4) int32 ``x, y, w, h`` of each mask's crop in source pixels.
        bits: the crops' pixels, row-major, packed with ``np.packbits``, each crop
            starting on a byte boundary.
    """

    boxes: npt.NDArray[np.int32]
    bits: npt.NDArray[np.uint8]
    offsets: npt.NDArray[np.int64] = field(init=False, repr=False)
    """Where each mask's bytes start in ``bits`` (n + 1 entries)."""

    def __post_init__(self) -> None:
        if self.boxes.ndim != 2 or self.boxes.shape[1] != 4:
            raise ValueError(
                f"mask boxes: expected shape (n, 4), got {self.boxes.shape}"
            )
        if (self.boxes[:, 2:] < 0).any():
            raise ValueError("mask boxes: negative width or height")
        sizes = (self.boxes[:, 2].astype(np.int64) * self.boxes[:, 3] + 7) // 8
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        if int(offsets[-1]) != len(self.bits):
            raise ValueError(
                f"mask bits: expected {int(offsets[-1])} bytes for "
                f"{len(self.boxes)} masks, got {len(self.bits)}"
            )
        object.__setattr__(self, "offsets", offsets)

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls) -> BoxMasks:
        return cls(np.empty((0, 4), np.int32), np.empty(0, np.uint8))

    @classmethod
    def from_crops(
        cls, origins: Sequence[tuple[int, int]], crops: Sequence[npt.NDArray[np.bool_]]
    ) -> BoxMasks:
        """From each mask's top-left corner (x, y) and its boolean crop."""
        if not crops:
            return cls.empty()
        boxes = np.array(
            [
                (x, y, c.shape[1], c.shape[0])
                for (x, y), c in zip(origins, crops, strict=True)
            ],
            np.int32,
        ).reshape(-1, 4)
        bits = np.concatenate([np.packbits(c.reshape(-1)) for c in crops])
        return cls(boxes, bits.astype(np.uint8, copy=False))

    @classmethod
    def from_dense(cls, masks: npt.NDArray[np.bool_]) -> BoxMasks:
        """From (n, H, W) full-frame masks, each cropped to its set pixels."""
        origins, crops = [], []
        for mask in masks:
            ys, xs = np.nonzero(mask)
            if len(xs) == 0:
                origins.append((0, 0))
                crops.append(np.zeros((0, 0), bool))
                continue
            x0, y0 = int(xs.min()), int(ys.min())
            origins.append((x0, y0))
            crops.append(mask[y0 : ys.max() + 1, x0 : xs.max() + 1])
        return cls.from_crops(origins, crops)

    def crop(self, i: int) -> npt.NDArray[np.bool_]:
        """Mask ``i`` as its (h, w) boolean crop at ``boxes[i][:2]``."""
        _, _, w, h = (int(v) for v in self.boxes[i])
        packed = self.bits[int(self.offsets[i]) : int(self.offsets[i + 1])]
        return np.unpackbits(packed, count=w * h).reshape(h, w).astype(bool)

    def in_frame(
        self, height: int, width: int
    ) -> Iterator[tuple[int, slice, slice, npt.NDArray[np.bool_]]]:
        """(index, rows, columns, the part of the crop inside the frame) for each
        mask that overlaps a (height, width) frame."""
        for i in range(len(self)):
            x, y, w, h = (int(v) for v in self.boxes[i])
            x1, y1 = min(x + w, width), min(y + h, height)
            if x1 > x and y1 > y:
                crop = self.crop(i)[: y1 - y, : x1 - x]
                yield i, slice(y, y1), slice(x, x1), crop

    def area(self) -> npt.NDArray[np.int64]:
        """(n,) pixels set in each mask."""
        return np.array(
            [int(np.count_nonzero(self.crop(i))) for i in range(len(self))], np.int64
        )

    def area_inside(self, region: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
        """(n,) pixels of each mask that fall in ``region``, a full-frame bool mask."""
        out = np.zeros(len(self), np.int64)
        for i, rows, columns, crop in self.in_frame(*region.shape):
            out[i] = int(np.count_nonzero(crop & region[rows, columns]))
        return out

    def coverage(self, region: npt.NDArray[np.bool_]) -> int:
        """Pixels of ``region`` covered by at least one mask (overlaps count once)."""
        covered = np.zeros_like(region)
        for _, rows, columns, crop in self.in_frame(*region.shape):
            covered[rows, columns] |= crop
        return int(np.count_nonzero(covered & region))

    def __getitem__(
        self,
        index: npt.NDArray[np.bool_] | npt.NDArray[np.int64] | Sequence[int] | slice,
    ) -> BoxMasks:
        """The selected masks; their packed bytes are copied as they are."""
        rows = np.arange(len(self))[index]
        chunks = [self.bits[self.offsets[i] : self.offsets[i + 1]] for i in rows]
        return BoxMasks(
            self.boxes[rows].reshape(-1, 4),
            np.concatenate(chunks) if chunks else np.empty(0, np.uint8),
        )

    @classmethod
    def merge(cls, items: Sequence[BoxMasks]) -> BoxMasks:
        items = [m for m in items if len(m)]
        if not items:
            return cls.empty()
        return cls(
            np.concatenate([m.boxes for m in items]),
            np.concatenate([m.bits for m in items]),
        )

    def to_parts(self) -> list[memoryview]:
        return [
            np.ascontiguousarray(self.boxes, np.int32).data,
            np.ascontiguousarray(self.bits, np.uint8).data,
        ]

    @classmethod
    def from_parts(
        cls, count: int, parts: Sequence[bytes | memoryview | bytearray]
    ) -> BoxMasks:
        """Rebuild from the two wire parts; sizes are validated."""
        boxes = np.frombuffer(parts[0], np.int32).reshape(-1, 4)
        if len(boxes) != count:
            raise ValueError(f"masks: expected {count} mask boxes, got {len(boxes)}")
        return cls(boxes, np.frombuffer(parts[1], np.uint8))


def polygon_region(
    polygon: npt.NDArray[np.float64], height: int, width: int
) -> npt.NDArray[np.bool_]:
    """A polygon rasterised to a full-frame boolean mask (for mask-area rules)."""
    import cv2  # here: every stage loads this module, few rasterise anything

    region = np.zeros((height, width), np.uint8)
    cv2.fillPoly(region, [np.round(polygon).astype(np.int32)], 1)
    return region.astype(bool)
