"""Benchmark workers: each measurement runs in a fresh process (``framechain bench
--worker SPEC``) so that one runtime's threads, caches and memory never colour the
next one's numbers."""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from benchmarks.bench import LIMIT_SECONDS, _frames


def _worker_limit(
    model: Path,
    shape: tuple[int, int],
    batch: int,
    device: str = "cpu",
    streams: int = 1,
) -> dict[str, Any]:
    """Images per second of ``streams`` copies of the model, each on its own thread
    with ``cores / streams`` inference threads, inferring the same batch over and
    over (the way the detector runs them)."""
    import numpy as np

    from stages.detect.backends import load_backend, threads_per_stream

    threads = threads_per_stream(None, streams)
    yolos = [
        load_backend(model, max(shape), threads, device=device) for _ in range(streams)
    ]
    if not yolos[0].dynamic:
        shape = yolos[0].imgsz  # a fixed-input model runs at its own size
    tensor = np.random.default_rng(0).random((batch, 3, *shape), dtype=np.float32)
    for yolo in yolos:
        for _ in range(3):
            yolo.infer(tensor)
    # Run for seconds, not a count: this machine's speed drifts over tens of
    # seconds, and a limit taken in a 2 s window is compared with chain runs of 20 s+.
    runs = [0] * streams
    started = time.perf_counter()

    def infer(stream: int) -> None:
        while runs[stream] < 8 or time.perf_counter() - started < LIMIT_SECONDS:
            yolos[stream].infer(tensor)
            runs[stream] += 1

    workers = [threading.Thread(target=infer, args=(i,)) for i in range(streams)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    return {"fps": sum(runs) * batch / elapsed, "runtime": yolos[0].runtime}


def _steady(
    results: Iterable[Any], each: Callable[[Any], None] | None = None
) -> dict[str, float]:
    """Consume a stream of results: steady-state fps (frames after the first over
    the time from the first to the last), wall time from the start, frames."""
    started = time.perf_counter()
    first = last = 0.0
    frames = 0
    for result in results:
        if each is not None:
            each(result)
        last = time.perf_counter()
        if frames == 0:
            first = last
        frames += 1
    return {
        "fps": (frames - 1) / (last - first),
        "wall_s": last - started,
        "frames": frames,
    }


def _worker_ultralytics(model: Path, clip: Path, imgsz: int) -> dict[str, float]:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    yolo = YOLO(str(model), task="detect")
    return _steady(
        yolo.track(
            source=str(clip),
            stream=True,
            imgsz=imgsz,
            verbose=False,
            tracker="bytetrack.yaml",
        )
    )


def _worker_loop(model: Path, clip: Path, imgsz: int) -> dict[str, float]:
    """The hand-written loop people write: Ultralytics predict, Roboflow's
    ByteTrack (the ``trackers`` package, where supervision moved it) and
    supervision's LineZone, one process, one frame at a time."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import supervision as sv
    from trackers import ByteTrackTracker
    from ultralytics import YOLO

    yolo = YOLO(str(model), task="detect")
    tracker = ByteTrackTracker()
    line = sv.LineZone(start=sv.Point(0, 200), end=sv.Point(4000, 200))

    def track_and_count(result: Any) -> None:
        line.trigger(tracker.update(sv.Detections.from_ultralytics(result)))

    return _steady(
        yolo.predict(source=str(clip), stream=True, imgsz=imgsz, verbose=False),
        track_and_count,
    )


def _worker_streams(
    model: Path, clip: Path, imgsz: int, streams: int
) -> dict[str, float]:
    """Ultralytics' own multi-stream mode: a ``.streams`` file, one tracker per
    stream, batched inference. Its loader keeps only each stream's newest frame, so
    on files it reads ahead and drops; what it processed per second of the run (from
    the first result) is what it achieves."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    listing = Path(tempfile.mkdtemp()) / "bench.streams"
    listing.write_text("\n".join([str(clip)] * streams) + "\n")
    yolo = YOLO(str(model), task="detect")
    started = time.perf_counter()
    frames = 0
    for _ in yolo.track(
        source=str(listing),
        stream=True,
        imgsz=imgsz,
        verbose=False,
        tracker="bytetrack.yaml",
    ):
        frames += 1
    wall = time.perf_counter() - started
    return {
        "fps": frames / wall,
        "wall_s": wall,
        "frames": frames,
        "offered": streams * _frames(clip),
    }


def run_worker(argument: str) -> int:
    """Run the measurement ``argument`` (JSON) names, in this fresh process, and
    print its result as one JSON line."""
    from benchmarks import transport

    spec = json.loads(argument)
    what = spec["what"]
    if what == "limit":
        result = _worker_limit(
            Path(spec["model"]),
            tuple(spec["shape"]),
            spec["batch"],
            spec.get("device", "cpu"),
            spec.get("streams", 1),
        )
    elif what == "ultralytics":
        result = _worker_ultralytics(
            Path(spec["model"]), Path(spec["clip"]), spec["imgsz"]
        )
    elif what == "loop":
        result = _worker_loop(Path(spec["model"]), Path(spec["clip"]), spec["imgsz"])
    elif what == "ultralytics-streams":
        result = _worker_streams(
            Path(spec["model"]), Path(spec["clip"]), spec["imgsz"], spec["streams"]
        )
    elif what == "transport-send":
        result = transport.worker_transport(spec["mode"])
    elif what == "transport-recv":
        result = transport.worker_transport_receive(spec["data"], spec["acks"])
    else:
        raise ValueError(f"unknown bench worker {what!r}")
    print(json.dumps(result))
    return 0
