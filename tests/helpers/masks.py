"""Masks as tests compare them: one object's mask as a full frame."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from pipeline.masks import BoxMasks


def dense(masks: BoxMasks, i: int, height: int, width: int) -> npt.NDArray[np.bool_]:
    """Mask ``i`` as a full (height, width) frame mask."""
    out = np.zeros((height, width), bool)
    x, y, w, h = (int(v) for v in masks.boxes[i])
    x1, y1 = min(x + w, width), min(y + h, height)
    if x1 > x and y1 > y:
        out[y:y1, x:x1] = masks.crop(i)[: y1 - y, : x1 - x]
    return out
