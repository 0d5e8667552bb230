"""``framechain bench cameras|transport|latency|soak``: the suites beyond one camera.

Each measures side by side in one invocation, on the same clip, model and machine,
medians over repeats where a repeat is affordable, and prints a markdown table:

- cameras: 1, 2, 4, 8 file cameras through one chain (aggregate fps, per-camera
  fairness, batch sizes reached) against the batched ONNX Runtime limit and the two
  ways Ultralytics can run many streams with a tracker each (its multi-source
  ``.streams`` mode, and one ``track(stream=True)`` process per stream);
- transport: one 1080p frame per hop between two processes, shared-memory reference
  vs pixels inline over tcp://127.0.0.1: one-way latency and throughput;
- latency: capture-to-event time with a live source (RTSP URL, or a file paced like
  a camera);
- soak: a looped, camera-paced source faster than the detector for N minutes: RSS
  and open files of every stage, frame age over time, drops;
- backends: the same model in each runtime (ONNX Runtime, PyTorch, OpenVINO fp32 and
  int8, TensorRT where present) on pre-made tensors at several batch sizes: the
  limit each backend sets, as a ratio to the first.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.bench import detector_options, limit_label, limit_settings
from benchmarks.chain import chain_config, file_camera, run_chain


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _spawn(spec: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "framechain.cli", "bench", "--worker", json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"bench worker failed: {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


# -- cameras ------------------------------------------------------------------
def suite_cameras(args: Any, model: Path, clip: Path, shape: tuple[int, int]) -> str:
    counts = [int(n) for n in args.cameras.split(",")]
    most = max(counts)
    rows = [
        "| measurement | aggregate fps (median) | runs | per-camera fps min–max "
        "| mean batch |",
        "|---|---:|---|---|---:|",
    ]
    # Each repeat measures the limits and then every camera count, so the ratio can
    # also be taken within a repeat (this machine's speed drifts between repeats).
    limit_runs: dict[str, list[float]] = {}
    chain_runs: dict[int, list[tuple[float, tuple[float, float], float]]] = {
        n: [] for n in counts
    }
    # camera count: the detector's streams and largest batch
    streams_used: dict[int, tuple[int, int]] = {}
    for _ in range(args.repeats):
        # batches 1, 2, 4, the chain's own and the largest camera count
        for batch, streams in limit_settings([args.batch, most]):
            spec = {
                "what": "limit",
                "model": str(model),
                "shape": shape,
                "batch": batch,
                "streams": streams,
            }
            limit_runs.setdefault(limit_label(batch, streams), []).append(
                _result(_spawn(spec))["fps"]
            )
        for n in counts:
            with tempfile.TemporaryDirectory(prefix="framechain-bench-") as tmp:
                cameras = {f"cam{i}": file_camera(clip) for i in range(n)}
                config = chain_config(model, cameras, Path(tmp), args.imgsz, args.batch)
                config["detector"].update(detector_options(args))
                result = run_chain(config, Path(tmp))
            if result.code != 0:
                raise RuntimeError(f"the chain failed with {n} cameras")
            fps = [float(result.stats[f"track.cam{i}"]["fps"]) for i in range(n)]
            mean_batch = float(result.stats["detect"].get("mean_batch", 0))
            streams_used[n] = (
                int(result.stats["detect"].get("streams", 1)),
                int(result.stats["detect"].get("max_batch", 0)),
            )
            chain_runs[n].append((sum(fps), (min(fps), max(fps)), mean_batch))
    limit = max(_median(runs) for runs in limit_runs.values())
    for label, runs in limit_runs.items():
        rows.append(
            f"| ONNX Runtime limit, {label} | {_median(runs):.1f} | "
            f"{', '.join(f'{r:.1f}' for r in runs)} | | |"
        )
    chain_at_most = 0.0
    for n in counts:
        runs = [fps for fps, _, _ in chain_runs[n]]
        median = _median(runs)
        low, high = chain_runs[n][runs.index(sorted(runs)[len(runs) // 2])][1]
        if n == most:
            chain_at_most = median
        plural = "s" if n > 1 else ""
        rows.append(
            f"| framechain, {n} camera{plural} ({streams_used[n][0]} inference "
            f"stream(s), batches ≤ {streams_used[n][1]}) | {median:.1f} | "
            f"{', '.join(f'{r:.1f}' for r in runs)} | {low:.1f}–{high:.1f} | "
            f"{_median([b for _, _, b in chain_runs[n]]):.2f} |"
        )
    paired = _median(
        [
            fps / max(runs[i] for runs in limit_runs.values())
            for i, (fps, _, _) in enumerate(chain_runs[most])
        ]
    )
    best_ultralytics = 0.0
    if not args.skip_ultralytics:
        for mode in ("multi-source", "processes"):
            runs = []
            processed = ""
            for _ in range(args.repeats):
                if mode == "processes":
                    workers = [
                        _spawn(
                            {
                                "what": "ultralytics",
                                "model": str(model),
                                "clip": str(clip),
                                "imgsz": args.imgsz,
                            }
                        )
                        for _ in range(most)
                    ]
                    results = [_result(w) for w in workers]
                    frames = sum(r["frames"] for r in results)
                    runs.append(frames / max(r["wall_s"] for r in results))
                else:
                    worker = _result(
                        _spawn(
                            {
                                "what": "ultralytics-streams",
                                "model": str(model),
                                "clip": str(clip),
                                "imgsz": args.imgsz,
                                "streams": most,
                            }
                        )
                    )
                    runs.append(worker["fps"])
                    processed = f"{worker['frames']} of {worker['offered']}"
            best_ultralytics = max(best_ultralytics, _median(runs))
            label = (
                f"Ultralytics, {most} `track(stream=True)` processes"
                if mode == "processes"
                else f"Ultralytics multi-source `.streams` ({most} streams; it "
                f"processed {processed} frames, dropping the rest)"
            )
            rows.append(
                f"| {label} | {_median(runs):.1f} | "
                f"{', '.join(f'{r:.1f}' for r in runs)} | | |"
            )
    ratios = [
        f"{most} cameras / batched limit = {chain_at_most / limit:.2f} (against the "
        f"faster limit, {limit:.1f} fps; median of "
        f"each repeat's own ratio {paired:.2f})"
    ]
    if best_ultralytics:
        versus = chain_at_most / best_ultralytics
        ratios.append(f"{most} cameras / best Ultralytics = {versus:.2f}")
    header = (
        f"clip {clip.name} per camera, model {model.name}, "
        f"input {shape[0]}×{shape[1]}, "
        f"{os.cpu_count()} cores, {args.repeats} repeats; aggregate = sum of the "
        "cameras' steady-state fps (Ultralytics processes: frames over the slowest's "
        "wall time)"
    )
    return "\n".join([header, "", *rows, "", "; ".join(ratios)])


# -- backends -----------------------------------------------------------------
def suite_backends(args: Any, models: list[Path], shape: tuple[int, int]) -> str:
    batches = [int(b) for b in args.batches.split(",")]
    rows = [
        "| model | runtime | batch | images/s (median) | runs | vs first |",
        "|---|---|---:|---:|---|---:|",
    ]
    first: dict[int, float] = {}
    for model in models:
        for batch in batches:
            spec = {
                "what": "limit",
                "model": str(model),
                "shape": list(shape),
                "batch": batch,
                "device": args.device,
            }
            runs = [_result(_spawn(spec)) for _ in range(args.repeats)]
            fps = _median([r["fps"] for r in runs])
            first.setdefault(batch, fps)
            each = ", ".join(f"{r['fps']:.1f}" for r in runs)
            rows.append(
                f"| {model.name} | {runs[0]['runtime']} | {batch} | {fps:.1f} | "
                f"{each} | "
                f"{fps / first[batch]:.2f} |"
            )
    return "\n".join(
        [
            f"input {shape[1]}×{shape[0]} (the clip letterboxed), device "
            f"{args.device}, {os.cpu_count()} cores, {args.repeats} repeats, each in "
            "a fresh process: inference only, on pre-made tensors",
            "",
            *rows,
        ]
    )


# -- transport ----------------------------------------------------------------
