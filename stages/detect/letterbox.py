"""Where a camera's frame lands in the model's input: Ultralytics' letterbox
geometry, without OpenCV, so that decode can scale frames straight to the size the
detector letterboxes them to."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How one source frame maps into a model input: resize to (new_w, new_h), then
    pad to (input_h, input_w) with ``left``/``top`` pixels before the image."""

    src_h: int
    src_w: int
    new_h: int
    new_w: int
    top: int
    left: int
    input_h: int
    input_w: int

    @classmethod
    def fit(
        cls, src_h: int, src_w: int, imgsz: tuple[int, int], stride: int, minimal: bool
    ) -> Letterbox:
        """Ultralytics' ``LetterBox``: scale to fit ``imgsz`` (h, w) keeping aspect,
        pad to it, or only to the next ``stride`` multiple when ``minimal``."""
        r = min(imgsz[0] / src_h, imgsz[1] / src_w)
        new_w, new_h = max(round(src_w * r), 1), max(round(src_h * r), 1)
        dw, dh = imgsz[1] - new_w, imgsz[0] - new_h
        if minimal:
            dw, dh = dw % stride, dh % stride
        top, bottom = round(dh / 2 - 0.1), round(dh / 2 + 0.1)
        left, right = round(dw / 2 - 0.1), round(dw / 2 + 0.1)
        return cls(
            src_h,
            src_w,
            new_h,
            new_w,
            top,
            left,
            new_h + top + bottom,
            new_w + left + right,
        )

    def to_source(self, xyxy: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Map boxes from model-input pixels back to source pixels, clipped."""
        out = xyxy.copy()
        out[:, [0, 2]] = (out[:, [0, 2]] - self.left) / (self.new_w / self.src_w)
        out[:, [1, 3]] = (out[:, [1, 3]] - self.top) / (self.new_h / self.src_h)
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, self.src_w)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, self.src_h)
        return out


@dataclass(frozen=True, slots=True)
class ModelInput:
    """A detector model's input geometry: the size (h, w) frames are fitted into,
    the stride, and whether padding goes only to the next stride multiple (a model
    with a dynamic input size, Ultralytics' minimal letterbox)."""

    imgsz: tuple[int, int]
    stride: int
    minimal: bool

    @classmethod
    def of(
        cls, fixed: tuple[int, int] | None, configured: int, stride: int
    ) -> ModelInput:
        """The model's own fixed size, else the configured ``imgsz`` (square,
        padded only to the stride)."""
        if fixed is not None:
            return cls(fixed, stride, False)
        return cls((configured, configured), stride, True)

    def fit(self, src_h: int, src_w: int) -> Letterbox:
        return Letterbox.fit(src_h, src_w, self.imgsz, self.stride, self.minimal)
