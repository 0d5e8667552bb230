"""``framechain bench pixels``: what each step between the decoder and the model's
input tensor costs per frame, for the two ways decode can hand frames on.

full: the decoder's YUV converted to a BGR frame of the camera's size, written to a
  shared-memory slot, resized by the detector to the letterbox size, then padded,
  swapped to RGB, transposed and scaled to float (what runs when snapshots, privacy
  or annotation need the full frame);
model: one swscale pass from YUV straight to the letterbox size, a slot of that
  size, then only the padding and the float conversion (what runs otherwise).

Each step runs over the same decoded frames in this process, one step at a time,
alternating between repeats; the table gives each step's median ms per frame and
how far the model input of the scaled path is from the full path's (mean absolute
difference in grey levels on the 0..255 input, before scaling to float).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

FRAMES = 120  # decoded once and kept: every step sees the same pictures


def _decoded(clip: Path, frames: int) -> tuple[list[Any], float]:
    """The first ``frames`` decoded frames, and the decoder's ms per frame."""
    import av

    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1
        started = time.perf_counter()
        out = [f for _, f in zip(range(frames), container.decode(stream), strict=False)]
        return out, (time.perf_counter() - started) * 1000 / len(out)


def _ms_per_frame(step: Callable[[Any], Any], inputs: list[Any]) -> float:
    started = time.perf_counter()
    for item in inputs:
        step(item)
    return (time.perf_counter() - started) * 1000 / len(inputs)


def suite_pixels(args: Any, model: Path, clip: Path) -> str:
    import cv2

    from pipeline.shm import StreamRings
    from stages.decode.convert import BgrConverter
    from stages.detect.backends import read_model_info
    from stages.detect.letterbox import ModelInput
    from stages.detect.yolo import preprocess

    info = read_model_info(model)
    shape = ModelInput.of(info.imgsz, args.imgsz, info.stride)
    frames, decode_ms = _decoded(clip, FRAMES)
    height, width = frames[0].height, frames[0].width
    box = shape.fit(height, width)
    full = BgrConverter(None, 1)
    scaled = BgrConverter(None, 1, shape)
    # the slots are written as decode writes them; the ring is ours and removed
    rings = StreamRings(f"framechain-bench-pixels-{os.getpid()}", 4)
    try:
        full_bgr = [full.pixels(f) for f in frames]
        small_bgr = [scaled.pixels(f) for f in frames]
        resized = [
            cv2.resize(p, (box.new_w, box.new_h), interpolation=cv2.INTER_LINEAR)
            for p in full_bgr
        ]

        def write(pixels: np.ndarray) -> None:
            rings.ring_for(pixels.nbytes).write(pixels)

        steps: dict[str, tuple[Callable[[Any], Any], list[Any]]] = {
            "full: YUV to BGR, camera size": (full.pixels, frames),
            "full: shared-memory write": (write, full_bgr),
            "full: detector resize (OpenCV)": (
                lambda p: cv2.resize(p, (box.new_w, box.new_h)),
                full_bgr,
            ),
            "full: pad, RGB, transpose, float": (
                lambda p: preprocess([p], [box]),
                resized,
            ),
            "model: YUV to BGR at the letterbox size": (scaled.pixels, frames),
            "model: shared-memory write": (write, small_bgr),
            "model: pad, RGB, transpose, float": (
                lambda p: preprocess([p], [box]),
                small_bgr,
            ),
        }
        runs: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(args.repeats):
            for name, (step, inputs) in steps.items():
                runs[name].append(_ms_per_frame(step, inputs))
    finally:
        rings.close()
    medians = {name: statistics.median(values) for name, values in runs.items()}
    difference = float(
        np.mean(
            [
                np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()
                for a, b in zip(resized, small_bgr, strict=True)
            ]
        )
    )
    return _table(
        clip, width, height, box, decode_ms, medians, runs, difference, args.repeats
    )


def _table(
    clip: Path,
    width: int,
    height: int,
    box: Any,
    decode_ms: float,
    medians: dict[str, float],
    runs: dict[str, list[float]],
    difference: float,
    repeats: int,
) -> str:
    lines = [
        f"clip {clip.name} ({width}×{height}), letterbox {box.new_w}×{box.new_h} "
        f"in {box.input_w}×{box.input_h}, {FRAMES} frames, one thread, "
        f"{repeats} repeats; H.264 decoding itself {decode_ms:.2f} ms per frame "
        "(the same for both)",
        "",
        "| step | ms per frame (median) | runs |",
        "|---|---:|---|",
    ]
    for name, value in medians.items():
        shown = ", ".join(f"{v:.2f}" for v in runs[name])
        lines.append(f"| {name} | {value:.2f} | {shown} |")
    full = sum(v for k, v in medians.items() if k.startswith("full"))
    model = sum(v for k, v in medians.items() if k.startswith("model"))
    lines += [
        f"| **full frame, total** | **{full:.2f}** | |",
        f"| **model size, total** | **{model:.2f}** | |",
        "",
        f"model / full = {model / full:.2f}; mean |difference| between the two "
        f"paths' letterboxed pixels: {difference:.2f} grey levels",
    ]
    return "\n".join(lines)
