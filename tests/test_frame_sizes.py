"""Frames travel at the size their readers need: scaled in decode to the detector's
letterbox when the detector is their only reader, full size when anything else
(snapshots, annotation, the crop classifier) reads them or the camera says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from conftest import camera_config, chain_env, write_config
from test_stages import drain, packets

from framechain.app import load
from pipeline.messages import Frame
from pipeline.payload import check_payload
from stages.decode.convert import BgrConverter
from stages.decode.kind import scaled_input
from stages.decode.stage import DecodeConfig, DecodeStage
from stages.detect.letterbox import ModelInput

IMGSZ_640 = ModelInput.of(None, 640, 32)


def test_only_cameras_whose_pixels_only_the_detector_reads_are_scaled(
    tmp_path: Path, assets: Path
) -> None:
    clip = assets / "crowd.mp4"
    cameras: dict[str, Any] = {
        "plain": camera_config(clip),
        "snapshots": camera_config(
            clip, snapshots={"directory": str(tmp_path / "snaps")}
        ),
        "off": camera_config(clip, decode={"scale_to_model": False}),
        "drawn": camera_config(clip, annotate={"video": str(tmp_path / "a.mp4")}),
    }
    loaded = load(write_config(tmp_path / "c.yaml", cameras), chain_env())
    assert scaled_input(loaded, "plain") == IMGSZ_640
    assert scaled_input(loaded, "snapshots") is None
    assert scaled_input(loaded, "off") is None
    assert scaled_input(loaded, "drawn") is None
    fixed = load(
        write_config(
            tmp_path / "fixed.yaml",
            {"plain": camera_config(clip)},
            detector={"model": "yolo11n_int8_openvino_model"},
        ),
        chain_env(),
    )
    # a fixed 640×640 input pads to the full square
    assert scaled_input(fixed, "plain") == ModelInput((640, 640), 32, False)


class _Picture:
    """What BgrConverter reads of a decoded frame to size it."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height


def test_the_scaled_size_is_the_letterbox_inside_never_larger_than_the_camera() -> None:
    cases = {
        (1920, 1080): (640, 360),
        (960, 540): (640, 360),
        (800, 450): (640, 360),
        (1280, 1024): (640, 512),
        (320, 240): (320, 240),  # the detector enlarges it: it travels as it is
        (640, 360): (640, 360),
    }
    converter = BgrConverter(None, 1, IMGSZ_640)
    for (w, h), size in cases.items():
        picture = _Picture(w, h)
        assert converter.size(picture) == size
        assert converter.frame_size(picture) == (w, h)
        assert converter.pixel_size(picture) == (None if size == (w, h) else size)
    # a configured resize wins: rules are in its pixels, and nothing is scaled again
    resized = BgrConverter((480, 270), 1, IMGSZ_640)
    assert resized.size(_Picture(1920, 1080)) == (480, 270)
    assert resized.frame_size(_Picture(1920, 1080)) == (480, 270)
    assert resized.pixel_size(_Picture(1920, 1080)) is None


def test_decode_sends_model_size_pixels_in_the_cameras_coordinates(
    assets: Path,
) -> None:
    """Every frame of the clip comes at 640×360 pixels, its message saying the camera
    is 800×450, and the inline payload passes the receiving side's size check; the
    pixels are the picture's (close to OpenCV's resize of the full frame)."""
    import av
    import cv2

    decode = DecodeStage(
        "cam", DecodeConfig(), ring_prefix=None, model=IMGSZ_640, resume_from=0
    )
    clip = assets / "crowd.mp4"
    emitted: list[Any] = []
    sent = drain(decode, packets(clip), emitted)
    decode.close()
    payloads = []
    for emit in emitted:
        if isinstance(emit.message, Frame):
            check_payload(emit.message, [memoryview(p) for p in emit.parts])
            payloads.append(np.frombuffer(emit.parts[0], np.uint8))
    frames = [m for m in sent if isinstance(m, Frame)]
    assert len(frames) == 460
    assert {(f.width, f.height, f.pixel_size) for f in frames} == {
        (800, 450, (640, 360))
    }
    with av.open(str(clip)) as container:
        full = [
            f.to_ndarray(format="bgr24")
            for _, f in zip(range(5), container.decode(video=0), strict=False)
        ]
    for mine, whole in zip(payloads[:5], full, strict=True):
        mine = mine.reshape(360, 640, 3)
        reference = cv2.resize(whole, (640, 360), interpolation=cv2.INTER_AREA)
        assert np.abs(mine.astype(np.int16) - reference).mean() < 3


def test_full_frames_still_travel_without_a_model(assets: Path) -> None:
    decode = DecodeStage("cam", DecodeConfig(), ring_prefix=None, resume_from=0)
    sent = drain(decode, packets(assets / "crowd.mp4"))
    decode.close()
    frames = [m for m in sent if isinstance(m, Frame)]
    assert {(f.width, f.height, f.pixel_size) for f in frames} == {(800, 450, None)}
