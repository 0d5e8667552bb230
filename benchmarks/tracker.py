"""``framechain bench tracker``: our ByteTrack (``stages.track.bytetrack``) against the
``trackers`` package's, on the detections the real chain produced for a clip.

One chain run records what the track stage receives (``links.record``); the
recorded frames then go through both trackers, alternating which goes first in each
repeat, the reference called the way the track stage called it (through
``supervision.Detections`` and back). The ids must agree on every frame; the table
gives the median time per frame of each, their ratio, and the memory a track
process pays for importing each one.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks.chain import chain_config, file_camera, run_chain
from benchmarks.reference_tracker import Tracker, reference_tracker
from pipeline.errors import FramechainError
from pipeline.recording import Frames, recorded_frames

if TYPE_CHECKING:
    pass


def _timed(tracker: Tracker, frames: Frames) -> tuple[float, list[Any]]:
    """Seconds per frame, and the (rows, ids) of every frame."""
    outputs = []
    started = time.perf_counter()
    for xyxy, confidence in frames:
        outputs.append(tracker(xyxy, confidence))
    return (time.perf_counter() - started) / len(frames), outputs


def _import_rss_mb(module: str) -> float:
    """RSS of a fresh interpreter once it has imported ``module``: what each camera's
    track process pays for its tracker before it holds a single track."""
    code = (  # not ru_maxrss: Linux carries the parent's peak across fork and exec
        f"import os, {module}; from benchmarks.chain import proc_rss_mb; "
        "print(proc_rss_mb(os.getpid()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip())


def suite_tracker(args: Any, model: Path, clip: Path) -> str:
    with tempfile.TemporaryDirectory(prefix="framechain-bench-") as tmp:
        config = chain_config(model, {"bench": file_camera(clip)}, Path(tmp))
        recording = Path(tmp) / "track.fcrec"
        config["links"] = {"record": {"track.bench.in": str(recording)}}
        result = run_chain(config, Path(tmp), sample_every_s=1.0)
        if result.code != 0:
            raise FramechainError("the chain failed while recording detections")
        frames, fps = recorded_frames(recording)
    track_rss = max(s.rss_mb.get("track.bench", 0.0) for s in result.samples)
    detections = sum(len(xyxy) for xyxy, _ in frames)
    from stages.track.config import TrackerConfig
    from stages.track.tracking import make_tracker

    tracker_config = TrackerConfig()
    times: dict[str, list[float]] = {"reference": [], "ours": []}
    agree = True
    for repeat in range(args.repeats):
        order = ["reference", "ours"] if repeat % 2 == 0 else ["ours", "reference"]
        outputs = {}
        for name in order:
            tracker = (
                reference_tracker(tracker_config, fps)[1]
                if name == "reference"
                else make_tracker(tracker_config, fps).update
            )
            seconds, outputs[name] = _timed(tracker, frames)
            times[name].append(seconds * 1e3)
        agree &= all(
            np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
            for a, b in zip(outputs["reference"], outputs["ours"], strict=True)
        )
    reference = statistics.median(times["reference"])
    ours = statistics.median(times["ours"])
    rss = {m: _import_rss_mb(m) for m in ("trackers", "stages.track.bytetrack")}

    def runs(values: list[float]) -> str:
        return ", ".join(f"{v:.3f}" for v in values)

    return "\n".join(
        [
            f"clip {clip.name} ({len(frames)} frames, {detections / len(frames):.1f} "
            f"detections per frame, {fps:.2f} fps), model {model.name}; "
            f"{args.repeats} repeats",
            "",
            "| tracker | ms per frame (median) | runs | import RSS MiB |",
            "|---|---:|---|---:|",
            "| `trackers` ByteTrackTracker, via supervision.Detections "
            f"| {reference:.3f} | {runs(times['reference'])} "
            f"| {rss['trackers']:.0f} |",
            f"| framechain ByteTrack (stages/track/bytetrack.py) | {ours:.3f} "
            f"| {runs(times['ours'])} | {rss['stages.track.bytetrack']:.0f} |",
            "",
            f"reference / ours = {reference / ours:.2f}; same ids on every frame: "
            f"{'yes' if agree else 'NO'}; track process RSS in the recording run "
            f"(peak): {track_rss:.0f} MiB",
        ]
    )
