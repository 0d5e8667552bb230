"""The crop classifier: Ultralytics' classification preprocessing and predictor
reproduced on real detection crops, and labels carried to the events."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import CROWD_LINE, framechain, read_events, write_config

from stages.detect.backends import load_backend
from stages.detect.classify import CropClassifier, crops_to_classify
from stages.detect.config import ClassifierConfig
from stages.detect.yolo import postprocess, preprocess


def crowd_crops(assets: Path, frames: int = 3) -> list[np.ndarray]:
    """Person crops from real crowd frames, cut where the detector puts them."""
    detector = load_backend(assets / "yolo11n.onnx", 640, threads=2, device="cpu")
    crops: list[np.ndarray] = []
    with av.open(str(assets / "crowd.mp4")) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % 30:
                continue
            image = frame.to_ndarray(format="bgr24")
            box = detector.letterbox(*image.shape[:2])
            raw = detector.infer(preprocess([image], [box]))[0][0]
            found = postprocess(raw, box, 0.25, 0.7, 300, 80)
            _, cut = crops_to_classify(
                image,
                found.xyxy,
                found.class_id,
                np.array([0], np.int32),
                ClassifierConfig(model="x", max_per_frame=64),
            )
            crops += [c.copy() for c in cut]
            if i >= 30 * (frames - 1):
                break
    return crops


def test_classifier_matches_ultralytics_on_real_crops(
    assets: Path, cls_onnx: Path
) -> None:
    """Same input tensors as Ultralytics' classification transform (within the
    resampling filters' difference), same top-1 label and probabilities as its
    predictor on the same -cls export."""
    from PIL import Image
    from ultralytics import YOLO
    from ultralytics.data.augment import classify_transforms

    crops = crowd_crops(assets)
    assert len(crops) > 20
    classifier = CropClassifier(cls_onnx, threads=2)
    ours = classifier.preprocess(crops)
    transform = classify_transforms(classifier.size)
    theirs = np.stack(
        [transform(Image.fromarray(c[..., ::-1].copy())).numpy() for c in crops]
    )
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).mean() < 0.02

    labels, scores = classifier.classify(crops)
    model = YOLO(str(cls_onnx), task="classify")
    predicted = [model.predict(c, verbose=False)[0].probs for c in crops]
    agree = np.mean(
        [p.top1 == label for p, label in zip(predicted, labels, strict=True)]
    )
    assert agree >= 0.9, agree
    gaps = [
        abs(float(p.data[label]) - float(score))
        for p, label, score in zip(predicted, labels, scores, strict=True)
    ]
    assert np.median(gaps) < 0.01, np.median(gaps)


@pytest.mark.slow
def test_labels_reach_the_events(
    tmp_path: Path, short_clip: Path, cls_onnx: Path
) -> None:
    """The detect stage classifies person crops; line crossings carry the track's
    label, one of the classifier's own."""
    config = write_config(
        tmp_path / "classify.yaml",
        {
            "cam": {
                "source": {"kind": "file", "path": str(short_clip)},
                "rules": [CROWD_LINE],
            }
        },
        detector={
            "model": "yolo11n.onnx",
            "classifier": {"model": str(cls_onnx), "classes": ["person"]},
        },
    )
    result = framechain("run", str(config), "--no-progress", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    names = CropClassifier(cls_onnx, threads=1).names
    crossings = [
        e for e in read_events(tmp_path / "events.db") if e["kind"] == "line_crossing"
    ]
    assert len(crossings) >= 3
    labels = [json.loads(e["data"]).get("label") for e in crossings]
    assert all(label in names for label in labels), labels
