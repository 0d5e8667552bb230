"""``framechain bench``: the chain against its limit and its peer, in one run, on the
same clip, model file, input size and machine; medians over repeats.

(a) limit: ONNX Runtime ``session.run`` on pre-made tensors of the shape the chain
    feeds, at every setting of ``limit_settings`` (batch sizes, one session on all
    cores or two on half the cores each); ratios are taken against the fastest;
(b) Ultralytics ``model.track(source, stream=True)`` with the same ONNX file;
(c) framechain end to end: capture, decode, detect, track (line rule), SQLite.

Throughput is steady state: frames after the first divided by the time from the first
to the last result, for (b) and (c) alike; wall time including start-up is shown too.
Each measurement runs in its own process, one at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.errors import FramechainError

SUITES = (
    "single",
    "cameras",
    "transport",
    "latency",
    "soak",
    "backends",
    "idle",
    "tracker",
    "memory",
    "pixels",
    "api",
    "console",
)
# the baselines each suite runs, and the packages they need (framechain[ultralytics])
BASELINE_PACKAGES = {
    "single": ("ultralytics", "trackers"),
    "cameras": ("ultralytics",),
    "tracker": ("trackers",),
}
LIMIT_SECONDS = 10.0  # how long each runtime-limit measurement runs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "suite",
        nargs="?",
        default="single",
        choices=SUITES,
        help="single camera (default), cameras (1..8), transport (1080p hop), "
        "latency (live source), soak (memory and frame age over minutes), "
        "backends (one model in every runtime), idle (CPU of cameras that send "
        "nothing), tracker (our ByteTrack vs the trackers package's), memory (RSS "
        "and PSS per stage kind and per camera), pixels (ms per frame of each "
        "step from the decoder to the model input, full-size and model-size), api "
        "(8 cameras with and without 4 clients watching and polling; /api/events "
        "latency on a million events), console (8 cameras with and without 4 "
        "headless browsers showing the console's live grid)",
    )
    parser.add_argument(
        "--clip",
        default="crowd.mp4",
        help="video file, or a name in the model directories",
    )
    parser.add_argument(
        "--model", default="yolo11n.onnx", help="ONNX model file or name"
    )
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument(
        "--batch",
        type=int,
        default=None,
        help="the chain's detector.max_batch (default: the detector's own choice)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--models-dir", default=None, help="default: $FRAMECHAIN_MODELS"
    )
    parser.add_argument("--skip-ultralytics", action="store_true")
    parser.add_argument(
        "--overlap",
        action="store_true",
        help="detector.overlap on: prepare a batch while the previous one is inferred",
    )
    parser.add_argument(
        "--streams",
        type=int,
        default=None,
        help="the chain's detector.streams (default: the detector's own choice)",
    )
    parser.add_argument(
        "--cameras", default="1,2,4,8", help="cameras suite: camera counts"
    )
    parser.add_argument(
        "--source", help="latency/soak: an rtsp:// URL (default: the clip, paced)"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=60,
        help="latency: seconds per run; idle: seconds measured",
    )
    parser.add_argument("--minutes", type=float, default=10, help="soak: duration")
    parser.add_argument(
        "--soak-imgsz",
        type=int,
        default=1280,
        help="soak: detector input size (the default makes it slower than the source)",
    )
    parser.add_argument(
        "--models",
        default="yolo11n.onnx,yolo11n.pt,yolo11n_int8_openvino_model",
        help="backends: comma-separated model files or names (.onnx, .pt, "
        "OpenVINO folders, .engine)",
    )
    parser.add_argument("--batches", default="1,4", help="backends: batch sizes")
    parser.add_argument("--device", default="cpu", help="backends: cpu, cuda or auto")
    parser.add_argument(
        "--baseline",
        help="memory: another checkout measured alternately in the same run",
    )
    parser.add_argument(
        "--target-fps",
        type=float,
        default=None,
        help="memory: frames per second each camera's decode keeps "
        "(default: max(1, 48 / cameras))",
    )
    parser.add_argument(
        "--cameras-per-process",
        type=int,
        default=None,
        help="memory: supervisor.cameras_per_process of this checkout's runs "
        "(default: the product's default, auto)",
    )
    parser.add_argument("--markdown", help="also write the table to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)


def _resolve(name: str, models_dir: str | None) -> Path:
    from stages.detect.models import model_directories, resolve_model

    return resolve_model(name, model_directories(models_dir, os.environ, Path.cwd()))


def _input_shape(clip: Path, imgsz: int, stride: int = 32) -> tuple[int, int]:
    import av

    from stages.detect.letterbox import Letterbox

    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        height, width = stream.codec_context.height, stream.codec_context.width
    box = Letterbox.fit(height, width, (imgsz, imgsz), stride, minimal=True)
    return box.input_h, box.input_w


def _frames(clip: Path) -> int:
    import av

    with av.open(str(clip)) as container:
        return int(container.streams.video[0].frames)


# -- workers (each runs in its own process) ---------------------------------
def _spawn(spec: dict[str, Any]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "framechain.cli", "bench", "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"bench worker {spec['what']} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- framechain ---------------------------------------------------------------
def _chain(
    model: Path, clip: Path, tmp: Path, args: argparse.Namespace
) -> dict[str, float]:
    from benchmarks.chain import chain_config, file_camera, run_chain

    config = chain_config(
        model, {"bench": file_camera(clip)}, tmp, args.imgsz, args.batch
    )
    config["detector"].update(detector_options(args))
    result = run_chain(config, tmp)
    if result.code != 0:
        raise RuntimeError("the framechain chain failed during the benchmark")
    stats = result.stats["track.bench"]
    return {
        "fps": float(stats["fps"]),
        "wall_s": result.wall_s,
        "frames": stats["frames"],
        "mean_batch": float(result.stats["detect"].get("mean_batch", 0)),
        "streams": int(result.stats["detect"].get("streams", 1)),
        "max_batch": int(result.stats["detect"].get("max_batch", 0)),
    }


def detector_options(args: argparse.Namespace) -> dict[str, Any]:
    """The detector settings the command line changes from the product's defaults."""
    options: dict[str, Any] = {"overlap": args.overlap}
    if args.streams is not None:
        options["streams"] = args.streams
    return options


def limit_settings(chain_batches: Iterable[int | None]) -> list[tuple[int, int]]:
    """(batch, streams) pairs the runtime limit is measured at, so that the limit is
    the runtime's best on this machine and not one setting of it: batches of 1, 2
    and 4 plus those the chain may reach (``chain_batches``), each run by one
    session on all cores and, on 2+ cores, by two sessions on half the cores each
    (the detector's default for ONNX Runtime on a CPU)."""
    batches = sorted({1, 2, 4, *(b for b in chain_batches if b)})
    two = [2] if (os.cpu_count() or 1) >= 2 else []
    return [(batch, streams) for batch in batches for streams in [1, *two]]


def limit_label(batch: int, streams: int) -> str:
    from stages.detect.backends import threads_per_stream

    if streams == 1:
        return f"batch {batch}"
    threads = threads_per_stream(None, streams)
    return f"batch {batch}, {streams} sessions × {threads} thread(s)"


def _check_baselines(args: argparse.Namespace) -> None:
    """Fail before minutes of measuring when a baseline cannot be imported."""
    import importlib.util

    needed = BASELINE_PACKAGES.get(args.suite, ())
    if args.skip_ultralytics and args.suite != "tracker":
        needed = ()
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise FramechainError(
            f"the {args.suite} benchmark's baselines need {', '.join(missing)}: "
            "pip install 'framechain[ultralytics]'"
            + ("" if args.suite == "tracker" else ", or pass --skip-ultralytics")
        )


def run_bench(args: argparse.Namespace) -> int:
    if args.worker:
        from benchmarks.workers import run_worker

        return run_worker(args.worker)
    from benchmarks import endurance, memory, pixels, tracker
    from benchmarks import suite as benchsuite
    from benchmarks.transport import suite_transport
    from pipeline.log import setup_logging

    setup_logging("bench", "WARNING")
    _check_baselines(args)
    model = _resolve(args.model, args.models_dir)
    clip = (
        Path(args.clip).resolve()  # the chain's config lives in a temporary folder
        if Path(args.clip).is_file()
        else _resolve(args.clip, args.models_dir)
    )
    shape = _input_shape(clip, args.imgsz)
    if args.suite != "single":
        if args.suite == "cameras":
            table = benchsuite.suite_cameras(args, model, clip, shape)
        elif args.suite == "transport":
            table = suite_transport(args)
        elif args.suite == "latency":
            table = endurance.suite_latency(args, model, clip)
        elif args.suite == "memory":
            table = memory.suite_memory(args, model, clip)
        elif args.suite == "pixels":
            table = pixels.suite_pixels(args, model, clip)
        elif args.suite == "idle":
            table = endurance.suite_idle(args, model)
        elif args.suite == "tracker":
            table = tracker.suite_tracker(args, model, clip)
        elif args.suite == "api":
            from benchmarks.api import suite_api

            table = suite_api(args, model, clip)
        elif args.suite == "console":
            from benchmarks.console import suite_console

            table = suite_console(args, model, clip)
        elif args.suite == "backends":
            models = [_resolve(m, args.models_dir) for m in args.models.split(",")]
            table = benchsuite.suite_backends(args, models, shape)
        else:
            table = endurance.suite_soak(args, model, clip)
        print(table)
        if args.markdown:
            Path(args.markdown).write_text(table + "\n")
        return 0
    results: dict[str, list[dict[str, float]]] = {}
    limits: dict[str, list[dict[str, float]]] = {}
    base = {"model": str(model), "shape": shape}
    settings = limit_settings([args.batch])
    for repeat in range(args.repeats):
        print(f"repeat {repeat + 1}/{args.repeats}", file=sys.stderr, flush=True)
        for batch, streams in settings:
            limits.setdefault(limit_label(batch, streams), []).append(
                _spawn({**base, "what": "limit", "batch": batch, "streams": streams})
            )
        if not args.skip_ultralytics:
            results.setdefault("l", []).append(
                _spawn(
                    {
                        "what": "loop",
                        "model": str(model),
                        "clip": str(clip),
                        "imgsz": args.imgsz,
                    }
                )
            )
            results.setdefault("b", []).append(
                _spawn(
                    {
                        "what": "ultralytics",
                        "model": str(model),
                        "clip": str(clip),
                        "imgsz": args.imgsz,
                    }
                )
            )
        with tempfile.TemporaryDirectory(prefix="framechain-bench-") as tmp:
            results.setdefault("c", []).append(_chain(model, clip, Path(tmp), args))
    table = _table(results, limits, args, model, clip, shape)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    return 0


def _runs(runs: list[dict[str, float]]) -> str:
    return ", ".join(f"{r['fps']:.1f}" for r in runs)


def _median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _table(
    results: dict[str, list[dict[str, float]]],
    limits: dict[str, list[dict[str, float]]],
    args: argparse.Namespace,
    model: Path,
    clip: Path,
    shape: tuple[int, int],
) -> str:
    limit = max(_median(runs, "fps") for runs in limits.values())
    c = _median(results["c"], "fps")
    rows = [
        "| measurement | fps (median) | runs | wall s (median) |",
        "|---|---:|---|---:|",
        *(
            f"| (a) ONNX Runtime limit, {label}, input 3×{shape[0]}×{shape[1]} | "
            f"{_median(runs, 'fps'):.1f} | {_runs(runs)} | |"
            for label, runs in limits.items()
        ),
    ]
    if "b" in results:
        b = _median(results["b"], "fps")
        rows.append(
            f"| (b) Ultralytics track(stream=True), same ONNX | {b:.1f} | "
            f"{_runs(results['b'])} | "
            f"{_median(results['b'], 'wall_s'):.1f} |"
        )
    if "l" in results:
        rows.append(
            f"| (b') hand-written loop: Ultralytics predict, trackers ByteTrack, "
            f"supervision LineZone | {_median(results['l'], 'fps'):.1f} | "
            f"{_runs(results['l'])} | "
            f"{_median(results['l'], 'wall_s'):.1f} |"
        )
    rows.append(
        f"| (c) framechain chain (mean batch "
        f"{_median(results['c'], 'mean_batch'):.2f}, "
        f"{results['c'][0]['streams']} stream(s), batches ≤ "
        f"{results['c'][0]['max_batch']}) | {c:.1f} | "
        f"{_runs(results['c'])} | "
        f"{_median(results['c'], 'wall_s'):.1f} |"
    )
    paired = statistics.median(
        run["fps"] / max(repeat[i]["fps"] for repeat in limits.values())
        for i, run in enumerate(results["c"])
    )
    ratios = [
        f"c/a = {c / limit:.2f} (against the faster limit, {limit:.1f} fps; "
        f"median of each repeat's own ratio {paired:.2f})"
    ]
    if "b" in results:
        ratios.append(f"c/b = {c / _median(results['b'], 'fps'):.2f}")
    if "l" in results:
        ratios.append(f"c/b' = {c / _median(results['l'], 'fps'):.2f}")
    header = (
        f"clip {clip.name}, model {model.name}, imgsz {args.imgsz} "
        f"(input {shape[0]}×{shape[1]}), {os.cpu_count()} cores, "
        f"{args.repeats} repeats"
    )
    return "\n".join([header, "", *rows, "", "; ".join(ratios)])
