"""Privacy: people (or any configured class) are blurred, pixelated or filled in every
image framechain writes or serves (annotated video, MJPEG, snapshots), before the
image leaves the track stage. With a segmentation model only the object's own
pixels are hidden, so the scene stays readable; with a detection model the box is.

Redaction uses every detection of the frame, not only confirmed tracks, so a person
the tracker has not confirmed yet is hidden too. Counting is unaffected: it never
looks at pixels.
"""

from __future__ import annotations

from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.detections import Detections
from stages.track.config import PrivacyConfig


def redact(
    image: npt.NDArray[np.uint8],
    detections: Detections,
    class_ids: npt.NDArray[np.int32],
    config: PrivacyConfig,
) -> npt.NDArray[np.uint8]:
    """A copy of ``image`` with the detections of ``class_ids`` hidden."""
    out = image.copy()
    height, width = out.shape[:2]
    chosen = np.flatnonzero(np.isin(detections.class_id, class_ids))
    for i in chosen.tolist():
        if detections.masks is not None:
            x, y, w, h = (int(v) for v in detections.masks.boxes[i])
            keep = detections.masks.crop(i)
        else:
            x1, y1, x2, y2 = detections.xyxy[i].tolist()
            dx, dy = (x2 - x1) * config.margin, (y2 - y1) * config.margin
            x, y = int(x1 - dx), int(y1 - dy)
            w, h = int(np.ceil(x2 + dx)) - x, int(np.ceil(y2 + dy)) - y
            keep = None
        left, top = max(0, x), max(0, y)
        right, bottom = min(width, x + w), min(height, y + h)
        if right <= left or bottom <= top:
            continue
        region = out[top:bottom, left:right]
        hidden = _hide(region, config)
        if keep is None:
            region[...] = hidden
        else:
            inside = keep[top - y : bottom - y, left - x : right - x]
            region[inside] = hidden[inside]
    return out


def _hide(
    region: npt.NDArray[np.uint8], config: PrivacyConfig
) -> npt.NDArray[np.uint8]:
    h, w = region.shape[:2]
    if config.method == "fill":
        return np.zeros_like(region)
    block = max(2, max(h, w) // config.strength)
    if config.method == "pixelate":
        small = cv2.resize(
            region,
            (max(1, -(-w // block)), max(1, -(-h // block))),
            interpolation=cv2.INTER_AREA,
        )
        pixelated = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
        return cast(npt.NDArray[np.uint8], pixelated)
    kernel = 2 * block + 1
    blurred = cv2.GaussianBlur(region, (kernel, kernel), 0)
    return cast(npt.NDArray[np.uint8], blurred)
