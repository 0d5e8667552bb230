"""Ultralytics YOLO pre- and post-processing shared by every backend: letterbox,
batch preprocessing, NMS and segmentation masks, matching Ultralytics' own predictor
(same letterbox rounding, class-aware NMS with the same offset, boxes scaled back the
same way) so results agree with it. The runtimes themselves are in
``stages.detect.backends``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.detections import Detections
from pipeline.masks import BoxMasks
from stages.detect.letterbox import Letterbox

log = logging.getLogger(__name__)

PAD_VALUE = 114
MAX_WH = 7680  # Ultralytics' per-class box offset for class-aware NMS


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
            image = cast(
                npt.NDArray[np.uint8],
                cv2.resize(
                    image, (box.new_w, box.new_h), interpolation=cv2.INTER_LINEAR
                ),
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
    num_classes: int | None = None,
    protos: npt.NDArray[np.float32] | None = None,
) -> Detections:
    """Decode one image's raw head output (4 + classes [+ mask coefficients],
    anchors): confidence filter, best class per box, class-aware NMS, boxes back to
    source pixels; with ``protos`` (a segmentation model's prototypes), the kept
    boxes' masks too."""
    num_classes = len(output) - 4 if num_classes is None else num_classes
    scores = output[4 : 4 + num_classes]
    best = scores.max(axis=0)
    candidates = np.flatnonzero(best > conf)
    if candidates.size == 0:
        return Detections.empty() if protos is None else _with_no_masks()
    class_id = scores[:, candidates].argmax(axis=0).astype(np.int32)
    confidence = best[candidates].astype(np.float32)
    cx, cy, w, h = output[:4, candidates]
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    offset = class_id[:, None].astype(np.float32) * MAX_WH
    shifted = (xyxy + offset).astype(np.float64)
    xywh = np.concatenate([shifted[:, :2], shifted[:, 2:] - shifted[:, :2]], axis=1)
    kept = cv2.dnn.NMSBoxes(
        xywh,  # type: ignore[arg-type]  # the stubs ask for lists; arrays work
        confidence.astype(np.float64),
        conf,
        iou,
    )
    keep = np.asarray(kept, np.int64).reshape(-1)[:max_det]
    source_xyxy = box.to_source(xyxy[keep].astype(np.float32))
    detections = Detections(
        xyxy=source_xyxy, confidence=confidence[keep], class_id=class_id[keep]
    )
    if protos is None:
        return detections
    coefficients = output[4 + num_classes :, candidates[keep]].T
    masks = segment_masks(protos, coefficients, source_xyxy, box)
    # like Ultralytics: a detection whose mask is empty is dropped
    return replace(detections, masks=masks)[masks.area() > 0]


def _with_no_masks() -> Detections:
    return replace(Detections.empty(), masks=BoxMasks.empty())


def segment_masks(
    protos: npt.NDArray[np.float32],
    coefficients: npt.NDArray[np.float32],
    xyxy: npt.NDArray[np.float32],
    box: Letterbox,
) -> BoxMasks:
    """Instance masks in source pixels, each computed only inside its box.

    The mask logits (coefficients × prototypes) live at a quarter of the model
    input; every source pixel of a box samples them bilinearly at its own centre
    mapped through the letterbox, which is what Ultralytics' two resizes (prototypes
    to input, input to source) amount to, without building either full-size image.
    A pixel is set where the logit is positive.
    """
    n_protos, proto_h, proto_w = protos.shape
    logits = (coefficients @ protos.reshape(n_protos, -1)).reshape(-1, proto_h, proto_w)
    scale_x = (box.new_w / box.src_w) * proto_w / box.input_w
    scale_y = (box.new_h / box.src_h) * proto_h / box.input_h
    shift_x = box.left * proto_w / box.input_w
    shift_y = box.top * proto_h / box.input_h
    origins, crops = [], []
    for logit, (x1, y1, x2, y2) in zip(logits, xyxy.tolist(), strict=True):
        u0, v0 = int(np.ceil(x1)), int(np.ceil(y1))
        u1, v1 = max(u0, int(np.ceil(x2))), max(v0, int(np.ceil(y2)))
        map_x = ((np.arange(u0, u1, dtype=np.float32) + 0.5) * scale_x + shift_x) - 0.5
        map_y = ((np.arange(v0, v1, dtype=np.float32) + 0.5) * scale_y + shift_y) - 0.5
        grid_x, grid_y = np.meshgrid(map_x, map_y)
        if grid_x.size:
            sampled = cv2.remap(
                logit, grid_x, grid_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            )
        else:
            sampled = np.zeros((v1 - v0, u1 - u0), np.float32)
        origins.append((u0, v0))
        crops.append(sampled > 0)
    return BoxMasks.from_crops(origins, crops)
