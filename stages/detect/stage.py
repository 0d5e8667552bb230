"""Detect: one process per model, batching frames from every camera into one
inference call, then per-camera class filters and confidence thresholds."""

from __future__ import annotations

import logging
import queue
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.clock import Clock, WallClock
from pipeline.detections import Detections
from pipeline.errors import SlotOverwrittenError
from pipeline.messages import Detected, EndOfStream, Frame, StreamStatus, Timing
from pipeline.metrics import FrameAges, Histogram
from pipeline.shm import RingReader
from pipeline.stage import Doorbell, Emit, Received, Stage
from pipeline.topology import route
from stages.detect.classify import crops_to_classify, label_columns
from stages.detect.config import CameraDetectConfig, CameraFilter, DetectorConfig
from stages.detect.stats import DetectStats

log = logging.getLogger(__name__)

OUTPUT = "detections"  # each frame's detections, addressed to its camera


@dataclass
class _Batch:
    """One received batch on its way through the model."""

    started: float
    frames: list[tuple[Frame, np.ndarray]] = field(default_factory=list)
    # indices of frames this process had received before (decode re-sent them)
    resent: set[int] = field(default_factory=set)
    # (frame indices, their letterboxes, the inference running on them)
    groups: list[tuple[list[int], list[Any], Future[Any]]] = field(default_factory=list)
    gated: list[tuple[Frame, Sequence[Any]]] = field(default_factory=list)
    other: list[tuple[str, int, Emit]] = field(default_factory=list)


class DetectStage(Stage):
    def __init__(
        self,
        config: DetectorConfig,
        model_path: Path,
        cameras: dict[str, CameraDetectConfig],
        pixels_for: set[str] | None = None,
        classifier_path: Path | None = None,
        clock: Clock | None = None,
    ) -> None:
        """``pixels_for``: cameras whose track stage needs the pixels (snapshots,
        annotation); forwarded inline when they are not in shared memory.
        ``classifier_path``: the crop classifier's model (``config.classifier``)."""
        self.config = config
        self.clock = clock or WallClock()
        self.pixels_for = pixels_for or set()
        self.model_path = model_path
        self.classifier_path = classifier_path
        self._classifier: Any = None
        self._classify_ids: np.ndarray | None = None
        self.cameras = cameras
        self.max_batch = config.max_batch or 1  # resolved when the model loads
        self.max_wait_s = config.max_wait_ms / 1000
        self._reader = RingReader()
        self._filters: dict[str, CameraFilter] = {}
        self._last: dict[str, Detections] = {}  # per camera, for gated frames
        self._newest: dict[str, int] = {}  # per camera, the highest seq received
        # batches whose inference is running, oldest first; they are handed on in
        # this order, so every camera's frames stay in sequence
        self._pending: deque[_Batch] = deque()
        self._streams = 0  # copies of the model, each inferring one batch at a time
        self._depth = 0  # batches left running when process() returns
        self._pool: ThreadPoolExecutor | None = None
        self._idle_models: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._doorbell: Doorbell | None = None
        self._ended: set[str] = set()
        self._model: Any = None
        self.counters: dict[str, Any] = defaultdict(int)
        self._infer_s = 0.0
        self._ages = FrameAges(clock=self.clock)
        self._inference = Histogram()

    def serves(self, stream_id: str) -> bool:
        return stream_id in self.cameras

    def setup(self) -> None:
        from stages.detect.loading import load_models

        cfg = self.config
        models, self.max_batch = load_models(cfg, self.model_path)
        self._model = models[0]  # names, task and letterbox: the same for all
        for model in models:
            self._idle_models.put(model)
        self._streams = len(models)
        self._depth = self._streams - 1 + int(cfg.overlap)
        if self._depth:
            self._doorbell = Doorbell()
        if cfg.classifier is not None and self.classifier_path is not None:
            from stages.detect.classify import CropClassifier

            self._classifier = CropClassifier(
                self.classifier_path, cfg.classifier.threads or cfg.threads
            )
            if cfg.classifier.classes is not None:
                index = {n: i for i, n in enumerate(self._model.names)}
                self._classify_ids = np.array(
                    [index[n] for n in cfg.classifier.classes if n in index], np.int32
                )
        self._pool = ThreadPoolExecutor(len(models), thread_name_prefix="inference")
        self._filters = {
            stream: CameraFilter(cfg, self._model.names, self.config.confidence)
            for stream, cfg in self.cameras.items()
        }

    def _pixels(self, frame: Frame, parts: Sequence[Any]) -> np.ndarray:
        shape = frame.pixel_shape
        if frame.shm is not None:
            return self._reader.view(frame.shm, shape)
        return np.frombuffer(parts[0], np.uint8).reshape(shape)

    def process(self, batch: Sequence[Received]) -> Iterable[Emit]:
        """Prepare this batch and start its inference. With one stream and no
        ``overlap``, wait for it and return its results; otherwise leave up to
        ``streams - 1 + overlap`` batches running (the oldest are waited for) and
        return every finished one, oldest first."""
        self._pending.append(self._prepare(batch))
        return self._hand_on(keep=self._depth) + self.produce()

    def produce(self) -> list[Emit]:
        """Hand on the oldest running batches that are done (the inference thread
        rings the doorbell when one finishes)."""
        out: list[Emit] = []
        while self._pending and all(f.done() for _, _, f in self._pending[0].groups):
            out += self._complete(self._pending.popleft())
        return out

    def wake_fd(self) -> int | None:
        return self._doorbell.fileno() if self._doorbell is not None else None

    def stop(self) -> Iterable[Emit]:
        return self._hand_on(keep=0)

    def _hand_on(self, keep: int) -> list[Emit]:
        """Wait for the oldest running batches until ``keep`` are left; their
        results, oldest first."""
        out: list[Emit] = []
        while len(self._pending) > keep:
            out += self._complete(self._pending.popleft())
        return out

    def _prepare(self, batch: Sequence[Received]) -> _Batch:
        """Sort the batch, letterbox its frames and queue their inference."""
        prepared = _Batch(self.clock.now())
        for item in batch:
            message = item.message
            if isinstance(message, EndOfStream | StreamStatus):
                if isinstance(message, EndOfStream):
                    self._ended.add(message.stream_id)
                port = route(OUTPUT, message.stream_id)
                prepared.other.append(
                    (message.stream_id, message.seq, Emit(port, message))
                )
            elif isinstance(message, Frame):
                self._ages.add(message.capture_ts, prepared.started)
                if not message.motion and self._gate_open_for(message, prepared.frames):
                    prepared.gated.append((message, item.parts))
                    continue
                newest = self._newest.get(message.stream_id, -1)
                self._newest[message.stream_id] = max(newest, message.seq)
                try:
                    pixels = self._pixels(message, item.parts)
                except SlotOverwrittenError as e:
                    self._missed(e, resent=message.seq <= newest)
                    continue
                if message.seq <= newest:
                    prepared.resent.add(len(prepared.frames))
                prepared.frames.append((message, pixels))
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        boxes = [self._model.letterbox(f.height, f.width) for f, _ in prepared.frames]
        for i, box in enumerate(boxes):
            groups[(box.input_h, box.input_w)].append(i)
        for indices in groups.values():
            valid, tensor = self._tensor(
                [prepared.frames[i] for i in indices],
                [boxes[i] for i in indices],
                [i in prepared.resent for i in indices],
            )
            if valid:
                kept = [indices[j] for j in valid]
                assert self._pool is not None
                future = self._pool.submit(self._run_model, tensor)
                if self._doorbell is not None:
                    future.add_done_callback(self._ring)
                prepared.groups.append((kept, [boxes[i] for i in kept], future))
        return prepared

    def _tensor(
        self,
        frames: list[tuple[Frame, np.ndarray]],
        boxes: list[Any],
        resent: list[bool],
    ) -> tuple[list[int], np.ndarray]:
        """The letterboxed input tensor, and which frames were still intact in
        their slots after being copied into it."""
        from stages.detect.yolo import preprocess

        tensor = preprocess([pixels for _, pixels in frames], boxes)
        valid = []
        for j, (frame, _) in enumerate(frames):
            try:
                if frame.shm is not None:
                    self._reader.verify(frame.shm, frame.pixel_shape)
                valid.append(j)
            except SlotOverwrittenError as e:
                self._missed(e, resent[j])
        if len(valid) < len(frames):
            tensor = tensor[valid]
        return valid, tensor

    def _missed(self, error: SlotOverwrittenError, resent: bool) -> None:
        """A frame whose slot was reused before this process read it whole. For a
        re-send of a frame this process already had (decode re-sends after
        silence, e.g. a slow start-up) that is expected: the first copy went on,
        was acknowledged and its slot rightly reused; downstream drops the copy."""
        if resent:
            self.counters["stale_resends"] += 1
            log.debug("%s (a re-sent frame)", error)
        else:
            self.counters["frames_missed"] += 1
            log.warning("%s", error)

    def _run_model(self, tensor: np.ndarray) -> tuple[list[np.ndarray], float]:
        """On an inference thread (every runtime releases the GIL), with whichever
        copy of the model no other thread is using."""
        model = self._idle_models.get()
        try:
            t0 = time.perf_counter()
            output = model.infer(tensor)
            return output, time.perf_counter() - t0
        finally:
            self._idle_models.put(model)

    def _ring(self, _done: Future[Any]) -> None:
        assert self._doorbell is not None
        self._doorbell.ring()

    def _complete(self, prepared: _Batch) -> list[Emit]:
        """Wait for the batch's inference, decode it, and emit every message of the
        batch in each camera's order."""
        from stages.detect.yolo import postprocess

        cfg = self.config
        classes = len(self._model.names)
        detected: list[tuple[Frame, Detections, np.ndarray]] = []
        for indices, boxes, future in prepared.groups:
            outputs, seconds = future.result()
            heads = outputs[0]
            protos = outputs[1] if self._model.task == "segment" else None
            self._infer_s += seconds
            self._inference.observe(seconds)
            self.counters["batches"] += 1
            self.counters["frames"] += len(indices)
            for k, (i, box) in enumerate(zip(indices, boxes, strict=True)):
                frame, pixels = prepared.frames[i]
                detections = postprocess(
                    heads[k],
                    box,
                    cfg.confidence,
                    cfg.iou,
                    cfg.max_det,
                    classes,
                    None if protos is None else protos[k],
                )
                detections = self._filters[frame.stream_id].apply(detections)
                detected.append((frame, detections, pixels))
        if self._classifier is not None:
            detected = self._classify(detected)
        finished = self.clock.now()
        out = prepared.other + self._emit_in_order(
            detected, prepared.gated, prepared.started, finished
        )
        return [emit for _, _, emit in sorted(out, key=lambda o: (o[0], o[1]))]

    def _classify(
        self, detected: list[tuple[Frame, Detections, np.ndarray]]
    ) -> list[tuple[Frame, Detections, np.ndarray]]:
        """Label the batch's chosen crops in one classifier call."""
        config = self.config.classifier
        assert config is not None
        chosen = [
            crops_to_classify(pixels, d.xyxy, d.class_id, self._classify_ids, config)
            for _, d, pixels in detected
        ]
        labels, scores = self._classifier.classify(
            [crop for _, crops in chosen for crop in crops]
        )
        self.counters["crops_classified"] += len(labels)
        out, start = [], 0
        for (frame, detections, pixels), (rows, _) in zip(
            detected, chosen, strict=True
        ):
            end = start + len(rows)
            columns = label_columns(
                len(detections), rows, labels[start:end], scores[start:end]
            )
            out.append((frame, replace(detections, data=columns), pixels))
            start = end
        return out

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
            masks=detections.masks is not None,
            labels=self._classifier.names if "label" in detections.data else (),
        )
        parts = detections.to_parts()
        if pixels is not None:
            parts.append(pixels.data.cast("B"))
        return Emit(route(OUTPUT, frame.stream_id), message, parts)

    def finished(self) -> bool:
        return self._ended >= set(self.cameras) and not self._pending

    def stats(self) -> DetectStats:
        frames = self.counters["frames"]
        p50, p99 = self._ages.quantiles()
        return DetectStats(
            **self.counters,
            mean_batch=frames / max(1, self.counters["batches"]),
            streams=self._streams,
            max_batch=self.max_batch,
            infer_ms_per_frame=1000 * self._infer_s / max(1, frames),
            frame_age_in_p50_s=p50,
            frame_age_in_p99_s=p99,
            inference=self._inference.report(),
        )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._reader.close()
