"""Detect: one process per model, batching frames from every camera into one
inference call, then per-camera class filters and confidence thresholds."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from pipeline.configtypes import StrictModel
from pipeline.detections import Detections
from pipeline.errors import SlotOverwrittenError
from pipeline.messages import Detected, EndOfStream, Frame, StreamStatus, Timing
from pipeline.metrics import FrameAges, Histogram
from pipeline.shm import RingReader
from pipeline.stage import Emit, Received, Stage

log = logging.getLogger(__name__)


class DetectorConfig(StrictModel):
    model: str = Field(
        default="yolo11n.onnx",
        description="Model file: a name looked up in the model directories, or a path.",
    )
    imgsz: int = Field(
        default=640, ge=32, le=4096, description="Inference size (long side)."
    )
    max_batch: int = Field(
        default=4, ge=1, le=256, description="Frames per inference call."
    )
    max_wait_ms: float = Field(
        default=5.0, ge=0, le=1000, description="Wait this long to fill a batch."
    )
    confidence: float = Field(
        default=0.25, gt=0, lt=1, description="Minimum confidence."
    )
    iou: float = Field(default=0.7, gt=0, le=1, description="NMS IoU threshold.")
    max_det: int = Field(default=300, ge=1, description="Detections kept per frame.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="auto: CUDA when onnxruntime-gpu is installed, else CPU.",
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Inference threads (default: all cores).",
    )

    @field_validator("imgsz")
    @classmethod
    def _stride_multiple(cls, value: int) -> int:
        if value % 32:
            raise ValueError(
                f"imgsz must be a multiple of 32, e.g. {value // 32 * 32 or 32}"
            )
        return value


class CameraDetectConfig(StrictModel):
    classes: list[str] | None = Field(
        default=None, description="Class names kept for this camera (default: all)."
    )
    confidence: float | dict[str, float] | None = Field(
        default=None,
        description="Minimum confidence for this camera: one value or per class name.",
    )


class _CameraFilter:
    """Per-camera class filter and per-class thresholds as two lookup arrays."""

    def __init__(self, config: CameraDetectConfig, names: Sequence[str], base: float):
        index = {name: i for i, name in enumerate(names)}
        self.allowed = np.ones(len(names), bool)
        if config.classes is not None:
            self.allowed[:] = False
            self.allowed[[index[n] for n in config.classes]] = True
        self.threshold = np.full(len(names), base, np.float32)
        if isinstance(config.confidence, float):
            self.threshold[:] = config.confidence
        elif isinstance(config.confidence, dict):
            for name, value in config.confidence.items():
                self.threshold[index[name]] = value

    def apply(self, detections: Detections) -> Detections:
        if not len(detections):
            return detections
        ids = detections.class_id
        keep = self.allowed[ids] & (detections.confidence >= self.threshold[ids])
        return detections if keep.all() else detections[keep]


class DetectStage(Stage):
    kind: ClassVar[str] = "detect"

    def __init__(
        self,
        config: DetectorConfig,
        model_path: Path,
        cameras: dict[str, CameraDetectConfig],
        pixels_for: set[str] | None = None,
    ) -> None:
        """``pixels_for``: cameras whose track stage needs the pixels (snapshots,
        annotation); forwarded inline when they are not in shared memory."""
        self.config = config
        self.pixels_for = pixels_for or set()
        self.model_path = model_path
        self.cameras = cameras
        self.max_batch = config.max_batch
        self.max_wait_s = config.max_wait_ms / 1000
        self._reader = RingReader()
        self._filters: dict[str, _CameraFilter] = {}
        self._last: dict[str, Detections] = {}  # per camera, for gated frames
        self._ended: set[str] = set()
        self._model: Any = None
        self.counters: dict[str, Any] = defaultdict(int)
        self._infer_s = 0.0
        self._ages = FrameAges()
        self._inference = Histogram()

    def setup(self) -> None:
        from stages.yolo import OnnxYolo

        self._model = OnnxYolo(
            self.model_path, self.config.imgsz, self.config.threads, self.config.device
        )
        self._model.warm_up()
        self._filters = {
            stream: _CameraFilter(cfg, self._model.names, self.config.confidence)
            for stream, cfg in self.cameras.items()
        }

    def _pixels(self, frame: Frame, parts: Sequence[Any]) -> np.ndarray:
        shape = (frame.height, frame.width, 3)
        if frame.shm is not None:
            return self._reader.view(frame.shm, shape)
        return np.frombuffer(parts[0], np.uint8).reshape(shape)

    def process(self, batch: Sequence[Received]) -> Iterable[Emit]:
        started = time.time()
        frames: list[tuple[Frame, np.ndarray]] = []
        gated: list[tuple[Frame, Sequence[Any]]] = []
        # (stream, seq, emit): sorted at the end so each stream's order holds
        out: list[tuple[str, int, Emit]] = []
        for item in batch:
            message = item.message
            if isinstance(message, EndOfStream | StreamStatus):
                if isinstance(message, EndOfStream):
                    self._ended.add(message.stream_id)
                port = f"track.{message.stream_id}"
                out.append((message.stream_id, message.seq, Emit(port, message)))
            elif isinstance(message, Frame):
                self._ages.add(message.capture_ts, started)
                if not message.motion and self._gate_open_for(message, frames):
                    gated.append((message, item.parts))
                    continue
                try:
                    frames.append((message, self._pixels(message, item.parts)))
                except SlotOverwrittenError as e:
                    self.counters["frames_missed"] += 1
                    log.warning("%s", e)
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        boxes = [self._model.letterbox(f.height, f.width) for f, _ in frames]
        for i, box in enumerate(boxes):
            groups[(box.input_h, box.input_w)].append(i)
        results: dict[int, Detections] = {}
        for indices in groups.values():
            results.update(
                self._infer(
                    [frames[i] for i in indices], [boxes[i] for i in indices], indices
                )
            )
        finished = time.time()
        detected: list[tuple[Frame, Detections, np.ndarray]] = []
        for i, detections in results.items():
            frame, pixels = frames[i]
            detected.append(
                (frame, self._filters[frame.stream_id].apply(detections), pixels)
            )
        out += self._emit_in_order(detected, gated, started, finished)
        return [emit for _, _, emit in sorted(out, key=lambda o: (o[0], o[1]))]

    def _gate_open_for(self, frame: Frame, queued: list[tuple[Frame, Any]]) -> bool:
        """Whether a frame without motion can reuse detections: the camera has some
        from an earlier frame (this batch's or a previous one)."""
        return frame.stream_id in self._last or any(
            f.stream_id == frame.stream_id for f, _ in queued
        )

    def _emit_in_order(
        self,
        detected: list[tuple[Frame, Detections, np.ndarray]],
        gated: list[tuple[Frame, Sequence[Any]]],
        started: float,
        finished: float,
    ) -> list[tuple[str, int, Emit]]:
        """Detected and gated frames in sequence per camera, so that a gated frame
        reuses the detections of the frame just before it, even in the same batch."""
        items: list[tuple[str, int, Any]] = [
            (f.stream_id, f.seq, (f, d, p)) for f, d, p in detected
        ] + [(f.stream_id, f.seq, (f, None, parts)) for f, parts in gated]
        out = []
        for stream, seq, (frame, detections, extra) in sorted(
            items, key=lambda i: (i[0], i[1])
        ):
            pixels = None
            if detections is None:  # gated: the camera's last detections again
                detections = self._last.get(stream, Detections.empty())
                self.counters["frames_gated"] += 1
                if frame.shm is None and stream in self.pixels_for:
                    pixels = self._pixels(frame, extra)
                emit = self._message(frame, detections, started, started, pixels)
            else:
                self._last[stream] = detections
                if frame.shm is None and stream in self.pixels_for:
                    pixels = extra
                emit = self._message(frame, detections, started, finished, pixels)
            out.append((stream, seq, emit))
        return out

    def _infer(
        self,
        frames: list[tuple[Frame, np.ndarray]],
        boxes: list[Any],
        indices: list[int],
    ) -> dict[int, Detections]:
        from stages.yolo import postprocess, preprocess

        tensor = preprocess([pixels for _, pixels in frames], boxes)
        valid = []
        for j, (frame, _) in enumerate(frames):
            try:
                if frame.shm is not None:
                    self._reader.verify(frame.shm, (frame.height, frame.width, 3))
                valid.append(j)
            except SlotOverwrittenError as e:
                self.counters["frames_missed"] += 1
                log.warning("%s", e)
        if not valid:
            return {}
        t0 = time.perf_counter()
        output = self._model.infer(
            tensor[valid] if len(valid) < len(frames) else tensor
        )
        self._infer_s += time.perf_counter() - t0
        self._inference.observe(time.perf_counter() - t0)
        self.counters["batches"] += 1
        self.counters["frames"] += len(valid)
        cfg = self.config
        return {
            indices[j]: postprocess(
                output[k], boxes[j], cfg.confidence, cfg.iou, cfg.max_det
            )
            for k, j in enumerate(valid)
        }

    def _message(
        self,
        frame: Frame,
        detections: Detections,
        started: float,
        finished: float,
        pixels: np.ndarray | None,
    ) -> Emit:
        message = Detected(
            frame=frame,
            count=len(detections),
            names=self._model.names,
            timings=(*frame.timings, Timing("detect", started, finished)),
            pixels=pixels is not None,
        )
        parts = detections.to_parts()
        if pixels is not None:
            parts.append(memoryview(pixels).cast("B"))
        return Emit(f"track.{frame.stream_id}", message, parts)

    def finished(self) -> bool:
        return self._ended >= set(self.cameras)

    def stats(self) -> dict[str, Any]:
        frames = self.counters["frames"]
        return {
            **self.counters,
            "mean_batch": frames / max(1, self.counters["batches"]),
            "infer_ms_per_frame": 1000 * self._infer_s / max(1, frames),
            **self._ages.report("frame_age_in"),
            "inference": self._inference.report(),
        }

    def close(self) -> None:
        self._reader.close()
