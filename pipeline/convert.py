"""Converters between our ``Detections`` and other libraries' types. Kept apart from
the type so that neither supervision nor ultralytics is imported on the hot path."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.detections import Detections

if TYPE_CHECKING:
    import supervision as sv


def to_supervision(detections: Detections) -> sv.Detections:
    """supervision's type, without masks: a full-frame mask per detection costs a
    frame's worth of bytes, and nothing downstream of it needs them."""
    import supervision as sv

    return sv.Detections(
        xyxy=detections.xyxy.astype(np.float32, copy=False),
        confidence=detections.confidence,
        class_id=detections.class_id,
        tracker_id=detections.tracker_id,
        data=dict(detections.data),
    )


def from_ultralytics(result: Any) -> Detections:
    """From one ``ultralytics.engine.results.Results`` (detection or segmentation:
    masks are scaled from the model input back to the source frame)."""
    boxes = result.boxes
    tracker_id = None
    if boxes.id is not None:
        tracker_id = boxes.id.cpu().numpy().astype(np.int64)
    return Detections(
        xyxy=boxes.xyxy.cpu().numpy().astype(np.float32),
        confidence=boxes.conf.cpu().numpy().astype(np.float32),
        class_id=boxes.cls.cpu().numpy().astype(np.int32),
        tracker_id=tracker_id,
        masks=_ultralytics_masks(result),
    )


def _ultralytics_masks(result: Any) -> Any:
    if result.masks is None:
        return None
    from ultralytics.utils import ops

    from pipeline.masks import BoxMasks

    data = result.masks.data
    full = ops.scale_masks(data[None].float(), result.orig_shape)[0] > 0.5
    return BoxMasks.from_dense(full.cpu().numpy())
