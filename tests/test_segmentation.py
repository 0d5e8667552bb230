"""Segmentation through the whole chain (masks from detect to rules, annotation and
privacy), and a detector compiled into the cache at start-up."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from conftest import framechain, read_events, write_config
from helpers.masks import dense

from pipeline.detections import Detections
from pipeline.masks import BoxMasks
from stages.detect.backends import load_backend
from stages.detect.yolo import postprocess, preprocess
from stages.track.config import PrivacyConfig
from stages.track.privacy import redact

LEFT_HALF = [[0, 0], [400, 0], [400, 450], [0, 450]]


def first_frame(clip: Path) -> np.ndarray:
    with av.open(str(clip)) as container:
        return next(container.decode(video=0)).to_ndarray(format="bgr24")


def detail(image: np.ndarray, where: np.ndarray | None = None) -> float:
    """Variance of the Laplacian (fine detail), over ``where`` or everywhere."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    laplacian = cv2.Laplacian(gray, cv2.CV_64F)
    return float(laplacian[where].var() if where is not None else laplacian.var())


def test_privacy_hides_exactly_the_masks(seg_onnx: Path, short_clip: Path) -> None:
    """On a real crowd frame with real masks: every pixel outside the people's
    masks is untouched, and inside them the detail is gone; with boxes only (no
    masks) the boxes are hidden instead."""
    image = first_frame(short_clip)
    model = load_backend(seg_onnx, 640, threads=2, device="cpu")
    box = model.letterbox(*image.shape[:2])
    heads, protos = model.infer(preprocess([image], [box]))
    detections = postprocess(heads[0], box, 0.25, 0.7, 300, 80, protos[0])
    people = detections[detections.class_id == 0]
    assert len(people) > 10 and people.masks is not None
    union = np.zeros(image.shape[:2], bool)
    for i in range(len(people)):
        union |= dense(people.masks, i, *image.shape[:2])

    hidden = redact(image, people, np.array([0], np.int32), PrivacyConfig())
    assert (hidden[~union] == image[~union]).all()
    interior = cv2.erode(union.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    before, after = detail(image, interior), detail(hidden, interior)
    assert after < before / 4, (before, after)

    boxes_only = Detections(
        xyxy=people.xyxy, confidence=people.confidence, class_id=people.class_id
    )
    filled = redact(
        image, boxes_only, np.array([0], np.int32), PrivacyConfig(method="fill")
    )
    x1, y1, x2, y2 = people.xyxy[0].astype(int)
    assert (filled[y1 + 1 : y2 - 1, x1 + 1 : x2 - 1] == 0).all()


@pytest.mark.slow
def test_masks_through_the_chain(
    tmp_path: Path, seg_onnx: Path, short_clip: Path
) -> None:
    """A segmentation model end to end: a zone that counts people by the share of
    their mask inside it reports how much of the zone the masks cover, the
    annotated video carries the masks' tint, snapshots are written blurred."""
    config = write_config(
        tmp_path / "seg.yaml",
        {
            "cam": {
                "source": {"kind": "file", "path": str(short_clip)},
                "rules": [
                    {
                        "kind": "zone",
                        "name": "left",
                        "polygon": LEFT_HALF,
                        "classes": ["person"],
                        "min_mask_overlap": 0.5,
                    }
                ],
                "annotate": {"video": str(tmp_path / "annotated.mp4")},
                "snapshots": {"directory": str(tmp_path / "snapshots")},
                "privacy": {"classes": ["person"], "method": "fill"},
            }
        },
        detector={"model": str(seg_onnx), "device": "cpu"},
    )
    result = framechain("run", str(config), "--no-progress", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    events = read_events(tmp_path / "events.db")
    occupancy = [e for e in events if e["kind"] == "zone_occupancy"]
    assert occupancy
    coverage = [json.loads(e["data"])["coverage"] for e in occupancy]
    assert all(0 <= c <= 1 for c in coverage) and max(coverage) > 0.01, coverage
    assert max(e["value"] for e in occupancy) >= 3
    assert any(e["kind"] == "zone_enter" for e in events)

    (segment,) = tmp_path.glob("annotated-*.mp4")
    with av.open(str(segment)) as container:
        annotated = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    assert len(annotated) >= 60
    snapshots = [
        cv2.imread(str(p)) for p in (tmp_path / "snapshots" / "cam").glob("*.jpg")
    ]
    assert len(snapshots) >= 10
    # people filled inside their masks: dark silhouettes fill each person's crop,
    # where the clip itself has almost no black
    black = [float((s.max(axis=2) < 24).mean()) for s in snapshots]
    assert (first_frame(short_clip).max(axis=2) < 24).mean() < 0.02
    assert np.median(black) > 0.3, black


@pytest.mark.slow
def test_compiled_detector_survives_a_short_startup_timeout(
    tmp_path: Path, short_clip: Path, assets: Path
) -> None:
    """detector.compile builds an int8 OpenVINO model from the .pt into the cache
    at start (calibration, then the drift check: longer than the 10 s start-up
    timeout): the stage keeps beating while it builds, is not killed, and the run
    completes (reuse of a cached entry: test_models.py)."""
    pytest.importorskip("nncf", reason="nncf (OpenVINO int8 calibration) not installed")
    from test_models import crowd_images

    crowd_images(assets, tmp_path / "calibration", 12)
    config = write_config(
        tmp_path / "compile.yaml",
        {"cam": {"source": {"kind": "file", "path": str(short_clip)}}},
        detector={
            "model": "yolo11n.pt",
            "compile": "openvino",
            "precision": "int8",
            "calibration": str(tmp_path / "calibration"),
            "max_drift": 0.5,
            "cache_dir": str(tmp_path / "cache"),
        },
        supervisor={"startup_timeout_s": 10},
    )
    first = framechain("run", str(config), "--no-progress", timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "silent" not in first.stderr, first.stderr[-3000:]
    assert "model cache: building" in first.stderr
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1
    # the detect stage was busy setting up (build, then the int8 drift check) for
    # longer than the start-up timeout: from its "building" line to its "loaded" one
    stamps = {
        key: datetime.strptime(line[:8], "%H:%M:%S")
        for line in first.stderr.splitlines()
        for key in ("model cache: building", "loaded yolo11n")
        if key in line
    }
    busy = stamps["loaded yolo11n"] - stamps["model cache: building"]
    assert busy.total_seconds() > 10, f"setup took only {busy}"
    assert "camera cam: 90 frames" in first.stdout + first.stderr


def test_annotation_tints_only_the_masks() -> None:
    """Masks are drawn as a tint in each track's colour over exactly their pixels."""
    from stages.annotate.drawing import paint_masks

    image = np.full((120, 160, 3), 128, np.uint8)
    dense = np.zeros((2, 120, 160), bool)
    cv2.circle(dense[0].view(np.uint8), (40, 60), 20, 1, -1)
    cv2.rectangle(dense[1].view(np.uint8), (100, 20), (140, 100), 1, -1)
    detections = Detections(
        xyxy=np.array([[20, 40, 61, 81], [100, 20, 141, 101]], np.float32),
        confidence=np.full(2, 0.9, np.float32),
        class_id=np.zeros(2, np.int32),
        tracker_id=np.array([3, 4]),
        masks=BoxMasks.from_dense(dense),
    )
    painted = image.copy()
    paint_masks(painted, detections)
    changed = (painted != image).any(axis=2)
    assert (changed == dense.any(axis=0)).all()
    assert not (painted[dense[0]] == painted[dense[1]][0]).all()  # two colours
