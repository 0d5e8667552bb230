"""Generated ground-truth scenes: real person crops cut from the photos shipped with
Ultralytics, moved along known paths over a background, encoded to H.264 with PyAV.
Every object's box is known in every frame, so counts can be checked exactly."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

WIDTH, HEIGHT, FPS = 640, 480, 15
PERSON_HEIGHT = 150


@dataclass(frozen=True)
class Walker:
    """A person crop whose box bottom-centre moves linearly from ``start`` to ``end``
    (pixels) between frames ``first`` and ``last``."""

    crop: int
    start: tuple[float, float]
    end: tuple[float, float]
    first: int
    last: int

    def anchor(self, frame: int) -> tuple[float, float] | None:
        if not self.first <= frame <= self.last:
            return None
        t = (frame - self.first) / (self.last - self.first)
        return (
            self.start[0] + t * (self.end[0] - self.start[0]),
            self.start[1] + t * (self.end[1] - self.start[1]),
        )


@dataclass(frozen=True)
class Route:
    """A person crop whose box bottom-centre follows straight legs between
    ``(frame, x, y)`` waypoints (standing still where two share a position)."""

    crop: int
    waypoints: tuple[tuple[int, float, float], ...]

    def anchor(self, frame: int) -> tuple[float, float] | None:
        points = self.waypoints
        if not points[0][0] <= frame <= points[-1][0]:
            return None
        for (f0, x0, y0), (f1, x1, y1) in itertools.pairwise(points):
            if f0 <= frame <= f1:
                t = (frame - f0) / (f1 - f0)
                return x0 + t * (x1 - x0), y0 + t * (y1 - y0)
        raise AssertionError("unreachable")


def person_crops(model_path: Path) -> list[np.ndarray]:
    """Persons found with high confidence in Ultralytics' bus.jpg and zidane.jpg,
    scaled to ``PERSON_HEIGHT`` pixels tall."""
    import ultralytics

    from stages.detect.backends import load_backend
    from stages.detect.yolo import postprocess, preprocess

    model = load_backend(model_path, 640, threads=2, device="cpu")
    crops = []
    for name in ("bus.jpg", "zidane.jpg"):
        image = cv2.imread(str(Path(ultralytics.__file__).parent / "assets" / name))
        box = model.letterbox(*image.shape[:2])
        detections = postprocess(
            model.infer(preprocess([image], [box]))[0][0], box, 0.25, 0.7, 300
        )
        for (x1, y1, x2, y2), conf, cls in zip(
            detections.xyxy, detections.confidence, detections.class_id, strict=True
        ):
            if cls != 0 or conf < 0.8 or (y2 - y1) < 1.8 * (x2 - x1):
                continue  # whole, upright persons only
            crop = image[int(y1) : int(y2), int(x1) : int(x2)]
            scale = PERSON_HEIGHT / crop.shape[0]
            crops.append(
                cv2.resize(
                    crop,
                    (max(1, round(crop.shape[1] * scale)), PERSON_HEIGHT),
                    interpolation=cv2.INTER_AREA,
                )
            )
    assert len(crops) >= 3, "expected at least three whole persons in the sample photos"
    return crops


def background() -> np.ndarray:
    """A smooth, textured backdrop (values spread apart for the lossy codec)."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    base = 90 + 40 * np.sin(x / 97.0) + 30 * np.cos(y / 71.0)
    noise = cv2.GaussianBlur(
        np.random.default_rng(7).normal(0, 25, (HEIGHT, WIDTH)).astype(np.float32),
        (0, 0),
        3,
    )
    gray = np.clip(base + noise, 0, 255).astype(np.uint8)
    return cv2.merge(
        [gray, (gray * 0.9).astype(np.uint8), (gray * 0.8).astype(np.uint8)]
    )


def box_of(
    walker: Walker | Route, crop: np.ndarray, frame: int
) -> tuple[int, int, int, int] | None:
    anchor = walker.anchor(frame)
    if anchor is None:
        return None
    h, w = crop.shape[:2]
    x1, y2 = round(anchor[0] - w / 2), round(anchor[1])
    return x1, y2 - h, x1 + w, y2


def render(
    path: Path,
    walkers: list[Walker] | list[Route],
    crops: list[np.ndarray],
    frames: int,
) -> None:
    """Write the scene to an H.264 mp4 at ``FPS``."""
    backdrop = background()
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"crf": "16", "preset": "veryfast", "bf": "0"}
        for index in range(frames):
            image = backdrop.copy()
            for walker in walkers:
                crop = crops[walker.crop]
                box = box_of(walker, crop, index)
                if box is None:
                    continue
                x1, y1, x2, y2 = box
                cx1, cy1 = max(0, -x1), max(0, -y1)
                cx2 = crop.shape[1] - max(0, x2 - WIDTH)
                cy2 = crop.shape[0] - max(0, y2 - HEIGHT)
                image[max(0, y1) : min(HEIGHT, y2), max(0, x1) : min(WIDTH, x2)] = crop[
                    cy1:cy2, cx1:cx2
                ]
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
