"""Detection parity: the detect stage, running as a real process fed by real
capture and decode processes, gives the same detections as Ultralytics' own
predictor on the same model file and frames."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import numpy as np
import zmq
from conftest import REPO, camera_config, chain_env, write_config

from pipeline.detections import Detections
from pipeline.messages import Ack, Detected
from pipeline.supervisor import stage_command
from pipeline.transport import Endpoint, LinkOptions, make_socket, receive, send

FRAMES = 40


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) IoU matrix of xyxy boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def detect_stage_outputs(tmp_path: Path, clip: Path) -> list[Detections]:
    """Run capture, decode and detect as `framechain stage` processes; this test plays
    the track stage: it receives detections and acknowledges frames."""
    config = write_config(tmp_path / "parity.yaml", {"cam": camera_config(clip)})
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
            assert pull.poll(60_000), "detect stage produced nothing for 60 s"
            message, parts = receive(pull)
            assert isinstance(message, Detected)
            results[message.frame.seq] = Detections.from_parts(message.count, parts)
            send(acks, Ack("cam", message.frame.seq))
        return [results[i] for i in range(FRAMES)]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=15)
        context.destroy(linger=0)


def test_detect_stage_matches_ultralytics(tmp_path: Path, assets: Path) -> None:
    """Same count per frame, mean IoU >= 0.99, confidences within 0.01, over 40 frames
    of a real crowd clip (pins letterbox rounding, colour order, NMS, box scaling)."""
    from ultralytics import YOLO

    clip = assets / "crowd.mp4"
    ours = detect_stage_outputs(tmp_path, clip)
    with av.open(str(clip)) as container:
        frames = [
            f.to_ndarray(format="bgr24")
            for _, f in zip(range(FRAMES), container.decode(video=0))
        ]
    model = YOLO(str(assets / "yolo11n.onnx"), task="detect")
    ious, conf_diffs = [], []
    for i, (frame, mine) in enumerate(zip(frames, ours, strict=True)):
        theirs = model.predict(frame, imgsz=640, conf=0.25, iou=0.7, verbose=False)[
            0
        ].boxes
        assert len(mine) == len(theirs), (
            f"frame {i}: {len(mine)} vs {len(theirs)} boxes"
        )
        if not len(mine):
            continue
        iou = box_iou(mine.xyxy, theirs.xyxy.numpy())
        match = iou.argmax(axis=1)
        ious += iou[np.arange(len(mine)), match].tolist()
        conf_diffs += np.abs(mine.confidence - theirs.conf.numpy()[match]).tolist()
        assert (mine.class_id == theirs.cls.numpy()[match].astype(int)).all()
    assert len(ious) > 10 * FRAMES // 2  # a crowd: many boxes were compared
    assert np.mean(ious) >= 0.99, np.mean(ious)
    assert max(conf_diffs) <= 0.01, max(conf_diffs)
