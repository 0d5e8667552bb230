"""Detection parity: the detect stage, running as a real process fed by real
capture and decode processes, gives the same detections as Ultralytics' own
predictor on the same model file and frames, for every backend installed here
(ONNX Runtime, PyTorch .pt, OpenVINO IR) and for segmentation masks."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import zmq
from conftest import REPO, camera_config, chain_env, write_config
from helpers.masks import dense

from framechain.app import stage_command
from pipeline.detections import Detections, box_iou
from pipeline.messages import Ack, Detected, Resume
from pipeline.transport import Endpoint, LinkOptions, make_socket, receive, send

FRAMES = 30


def detect_stage_outputs(
    tmp_path: Path,
    clip: Path,
    detector: dict[str, Any] | None = None,
    scale_to_model: bool = False,
    pixel_sizes: set[tuple[int, int] | None] | None = None,
) -> list[Detections]:
    """Run capture, decode and detect as `framechain stage` processes; this test plays
    the track stage: it receives detections and acknowledges frames. Decode hands
    on full frames unless ``scale_to_model``; the frames' ``pixel_size`` go into
    ``pixel_sizes``."""
    config = write_config(
        tmp_path / "parity.yaml",
        {"cam": camera_config(clip, decode={"scale_to_model": scale_to_model})},
        detector=detector or {"model": "yolo11n.onnx"},
    )
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    command = stage_command(config, runtime)
    procs = [
        subprocess.Popen(command(name, None), cwd=REPO, env=chain_env())
        for name in ("capture.cam", "decode.cam", "detect")
    ]
    context = zmq.Context()
    try:
        pull = make_socket(
            context,
            Endpoint(
                "in", zmq.PULL, f"ipc://{runtime}/track.cam.in", True, LinkOptions()
            ),
        )
        acks = make_socket(
            context,
            Endpoint(
                "acks",
                zmq.PUSH,
                f"ipc://{runtime}/decode.cam.acks",
                False,
                LinkOptions(linger_ms=0),
            ),
        )
        results: dict[int, Detections] = {}
        while len(results) < FRAMES:
            deadline = time.monotonic() + 60
            while not pull.poll(1000):
                assert time.monotonic() < deadline, "detect produced nothing for 60 s"
                if not results:
                    # as a track would: decode of a file waits to be told where
                    # to start (said again until it hears: it may be starting)
                    send(acks, Resume("cam", 0, 0))
            message, parts = receive(pull)
            assert isinstance(message, Detected)
            if pixel_sizes is not None:
                pixel_sizes.add(message.frame.pixel_size)
            results[message.frame.seq] = Detections.from_parts(
                message.count, parts, masks=message.masks
            )
            send(acks, Ack("cam", message.frame.seq))
        return [results[i] for i in range(FRAMES)]
    finally:
        for proc in procs:
            proc.terminate()
        # A stage drains for at most 8 s after SIGTERM (here its peers are
        # stopping too); a parity test checks outputs, so one slower to go on a
        # busy machine is named and killed rather than left behind.
        slow = []
        for name, proc in zip(("capture.cam", "decode.cam", "detect"), procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                slow.append(name)
                proc.kill()
                proc.wait()
        context.destroy(linger=0)
        assert not slow, f"{slow} still running 30 s after SIGTERM"


def crowd_frames(clip: Path) -> list[np.ndarray]:
    with av.open(str(clip)) as container:
        return [
            f.to_ndarray(format="bgr24")
            for _, f in zip(range(FRAMES), container.decode(video=0))
        ]


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def assert_parity(
    ours: list[Detections],
    model: Any,
    frames: list[np.ndarray],
    conf_tolerance: float = 0.01,
    scale: float = 1.0,
) -> dict[str, float]:
    """Same count per frame, same classes, mean box IoU >= 0.99, confidences within
    ``conf_tolerance``, and for masks mean mask IoU >= 0.95 (masks compared at the
    source resolution, where both sides put them). Ultralytics' boxes are
    multiplied by ``scale`` first (it was given frames at another size)."""
    from pipeline.convert import from_ultralytics

    ious, conf_diffs, mask_ious = [], [], []
    for i, (frame, mine) in enumerate(zip(frames, ours, strict=True)):
        result = model.predict(frame, imgsz=640, conf=0.25, iou=0.7, verbose=False)[0]
        theirs = from_ultralytics(result)
        assert len(mine) == len(theirs), f"frame {i}: {len(mine)} vs {len(theirs)}"
        if not len(mine):
            continue
        iou = box_iou(mine.xyxy, theirs.xyxy * np.float32(scale))
        match = iou.argmax(axis=1)
        ious += iou[np.arange(len(mine)), match].tolist()
        conf_diffs += np.abs(mine.confidence - theirs.confidence[match]).tolist()
        assert (mine.class_id == theirs.class_id[match]).all()
        if theirs.masks is not None:
            assert mine.masks is not None, "the model segments but no masks came"
            height, width = frame.shape[:2]
            mask_ious += [
                mask_iou(
                    dense(mine.masks, k, height, width),
                    dense(theirs.masks, int(m), height, width),
                )
                for k, m in enumerate(match)
            ]
    assert len(ious) > 10 * FRAMES // 2  # a crowd: many boxes were compared
    assert np.mean(ious) >= 0.99, np.mean(ious)
    assert max(conf_diffs) <= conf_tolerance, max(conf_diffs)
    if mask_ious:
        assert np.mean(mask_ious) >= 0.95, np.mean(mask_ious)
    return {
        "box_iou": float(np.mean(ious)),
        "mask_iou": float(np.mean(mask_ious or [0])),
    }


def test_detect_stage_matches_ultralytics(tmp_path: Path, assets: Path) -> None:
    """ONNX Runtime (the default): pins letterbox rounding, colour order, NMS and
    box scaling against Ultralytics' predictor on the same .onnx file."""
    from ultralytics import YOLO

    clip = assets / "crowd.mp4"
    ours = detect_stage_outputs(tmp_path, clip)
    model = YOLO(str(assets / "yolo11n.onnx"), task="detect")
    assert_parity(ours, model, crowd_frames(clip))


def test_frames_scaled_in_decode_match_ultralytics_on_the_same_pixels(
    tmp_path: Path, assets: Path
) -> None:
    """With nothing but the detector reading a camera's pixels, decode scales its
    frames to the letterbox size (800×450 to 640×360) and the detector maps boxes
    back to the camera's pixels: Ultralytics' predictor given those same small
    frames finds the same objects, once its boxes are scaled to 800×450."""
    from ultralytics import YOLO

    from stages.decode.convert import BgrConverter
    from stages.detect.letterbox import ModelInput

    clip = assets / "crowd.mp4"
    sizes: set[tuple[int, int] | None] = set()
    ours = detect_stage_outputs(tmp_path, clip, scale_to_model=True, pixel_sizes=sizes)
    assert sizes == {(640, 360)}
    scaler = BgrConverter(None, 1, ModelInput.of(None, 640, 32))
    with av.open(str(clip)) as container:
        small = [
            scaler.pixels(f) for _, f in zip(range(FRAMES), container.decode(video=0))
        ]
    model = YOLO(str(assets / "yolo11n.onnx"), task="detect")
    assert_parity(ours, model, small, scale=800 / 640)


@pytest.mark.slow
def test_pytorch_backend_matches_ultralytics(tmp_path: Path, assets: Path) -> None:
    """A .pt checkpoint on the PyTorch backend against Ultralytics' predictor on the
    same checkpoint: the segmentation one, whose head holds the detection head's
    outputs plus the mask coefficients, so boxes and masks are both checked."""
    checkpoint = "yolo11n-seg.pt"
    from ultralytics import YOLO

    clip = assets / "crowd.mp4"
    ours = detect_stage_outputs(tmp_path, clip, {"model": checkpoint, "device": "cpu"})
    assert_parity(ours, YOLO(str(assets / checkpoint)), crowd_frames(clip))


@pytest.mark.slow
def test_openvino_backend_matches_ultralytics(tmp_path: Path, assets: Path) -> None:
    """The int8 OpenVINO IR (a fixed 640×640 input) against Ultralytics' predictor
    on the same folder."""
    pytest.importorskip("openvino", reason="openvino is not installed")
    from ultralytics import YOLO

    clip = assets / "crowd.mp4"
    folder = "yolo11n_int8_openvino_model"
    ours = detect_stage_outputs(tmp_path, clip, {"model": folder, "device": "cpu"})
    assert_parity(ours, YOLO(str(assets / folder), task="detect"), crowd_frames(clip))


@pytest.mark.slow
def test_segmentation_masks_match_ultralytics(
    tmp_path: Path, assets: Path, seg_onnx: Path
) -> None:
    """A segmentation model exported to ONNX: boxes as above and instance masks
    with mean IoU >= 0.95 against Ultralytics' masks scaled to the frame."""
    from ultralytics import YOLO

    clip = assets / "crowd.mp4"
    ours = detect_stage_outputs(
        tmp_path, clip, {"model": str(seg_onnx), "device": "cpu"}
    )
    scores = assert_parity(
        ours, YOLO(str(seg_onnx), task="segment"), crowd_frames(clip)
    )
    print("segmentation parity", scores)
