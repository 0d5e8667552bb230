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
import socket
import statistics
import subprocess
import sys
import tempfile
import time
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
            batch = float(result.stats["detect"].get("mean_batch", 0))
            streams_used[n] = (
                int(result.stats["detect"].get("streams", 1)),
                int(result.stats["detect"].get("max_batch", 0)),
            )
            chain_runs[n].append((sum(fps), (min(fps), max(fps)), batch))
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
                    result = _result(
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
                    runs.append(result["fps"])
                    processed = f"{result['frames']} of {result['offered']}"
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
def suite_transport(args: Any) -> str:
    rows = [
        "| 1080p hop | one-way latency p50 (ms) | p99 (ms) | throughput (frames/s) |",
        "|---|---:|---:|---:|",
    ]
    results = {}
    for mode in ("shm", "tcp"):
        runs = [
            _result(_spawn({"what": "transport-send", "mode": mode}))
            for _ in range(args.repeats)
        ]
        results[mode] = runs
        label = (
            "shared memory (ipc://, slot reference)"
            if mode == "shm"
            else "inline (tcp://127.0.0.1, 6.2 MB part)"
        )
        rows.append(
            f"| {label} | {_median([r['p50_ms'] for r in runs]):.3f} | "
            f"{_median([r['p99_ms'] for r in runs]):.3f} | "
            f"{_median([r['fps'] for r in runs]):.0f} |"
        )
    copy = _median([r["ring_write_ms"] for r in results["shm"]])
    return "\n".join(
        [
            f"one 1920×1080 BGR frame per message, two processes, {os.cpu_count()} "
            f"cores, {args.repeats} repeats; latency: send to a verified view in the "
            "receiver (ping-pong), throughput: a stream with 4 frames in flight",
            "",
            *rows,
            "",
            f"writing the frame into its ring slot (decode's one copy): {copy:.3f} ms "
            "median, not part of the hop",
        ]
    )


def worker_transport(mode: str, frames: int = 300) -> dict[str, Any]:
    """Sender side; spawns the receiver itself so both ends are fresh processes."""
    import numpy as np
    import zmq

    from pipeline.messages import Frame, Heartbeat
    from pipeline.shm import FrameRing
    from pipeline.transport import Endpoint, LinkOptions, make_socket, receive, send

    tmp = Path(tempfile.mkdtemp(prefix="framechain-hop-"))
    if mode == "shm":
        data_uri = f"ipc://{tmp}/data"
    else:
        data_uri = f"tcp://127.0.0.1:{_free_port()}"
    ack_uri = f"ipc://{tmp}/acks"
    context: zmq.Context[Any] = zmq.Context()
    options = LinkOptions(hwm=8, linger_ms=0)
    data = make_socket(context, Endpoint("frames", zmq.PUSH, data_uri, True, options))
    acks = make_socket(context, Endpoint("acks", zmq.PULL, ack_uri, True, options))
    receiver = _spawn({"what": "transport-recv", "data": data_uri, "acks": ack_uri})
    pixels = np.random.default_rng(1).integers(0, 255, (1080, 1920, 3), np.uint8)
    ring = (
        FrameRing(f"fc-hop-{os.getpid()}", pixels.nbytes, 6) if mode == "shm" else None
    )
    writes: list[float] = []

    def message(seq: int) -> tuple[Frame, list[Any]]:
        ref = None
        parts: list[Any] = []
        if ring is not None:
            t0 = time.perf_counter()
            ref = ring.write(pixels)
            writes.append(time.perf_counter() - t0)
        else:
            parts = [memoryview(pixels.reshape(-1))]
        frame = Frame("hop", seq, time.time(), 0.0, 1920, 1080, 30.0, ref)
        return frame, parts

    try:
        latencies = []
        for seq in range(frames):  # ping-pong: one frame in flight
            frame, parts = message(seq)
            frame = Frame("hop", seq, time.time(), 0.0, 1920, 1080, 30.0, frame.shm)
            send(data, frame, parts)
            reply, _ = receive(acks)
            assert isinstance(reply, Heartbeat)
            latencies.append(float(reply.stats["latency_s"]))
        started = time.perf_counter()
        in_flight = 0
        for seq in range(frames):  # throughput: up to 4 in flight
            if in_flight == 4:
                receive(acks)
                in_flight -= 1
            send(data, *message(frames + seq))
            in_flight += 1
        while in_flight:
            receive(acks)
            in_flight -= 1
        throughput = frames / (time.perf_counter() - started)
        send(data, Heartbeat("stop", 0, time.time(), "stopping"))
        receiver.communicate(timeout=10)
    finally:
        if receiver.poll() is None:
            receiver.kill()
        if ring is not None:
            ring.close()
        context.destroy(linger=0)
    latencies.sort()
    return {
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
        "fps": throughput,
        "ring_write_ms": 1000 * _median(writes),
    }


def worker_transport_receive(data_uri: str, ack_uri: str) -> dict[str, Any]:
    import numpy as np
    import zmq

    from pipeline.messages import Frame, Heartbeat
    from pipeline.shm import RingReader
    from pipeline.transport import Endpoint, LinkOptions, make_socket, receive, send

    context: zmq.Context[Any] = zmq.Context()
    options = LinkOptions(hwm=8, linger_ms=0)
    data = make_socket(context, Endpoint("frames", zmq.PULL, data_uri, False, options))
    acks = make_socket(context, Endpoint("acks", zmq.PUSH, ack_uri, False, options))
    reader = RingReader()
    shape = (1080, 1920, 3)
    while True:
        message, parts = receive(data)
        if not isinstance(message, Frame):
            break
        if message.shm is not None:
            view = reader.view(message.shm, shape)
            checksum = int(view[540, 960, 0])  # touch the pixels
            reader.verify(message.shm, shape)
        else:
            view = np.frombuffer(parts[0], np.uint8).reshape(shape)
            checksum = int(view[540, 960, 0])
        latency = time.time() - message.capture_ts
        stats = {"latency_s": latency, "checksum": checksum}
        send(acks, Heartbeat("hop", os.getpid(), time.time(), "running", stats))
    reader.close()
    context.destroy(linger=0)
    return {"ok": True}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- latency and soak -----------------------------------------------------------
def _live_camera(args: Any, clip: Path) -> dict[str, Any]:
    if args.source:
        return {
            "source": {"kind": "rtsp", "url": args.source},
            "rules": file_camera(clip)["rules"],
        }
    return file_camera(clip, live=True)


def _histogram_quantile(histogram: dict[str, Any], q: float) -> float:
    counts, buckets = histogram["counts"], histogram["buckets"]
    total = sum(counts)
    running = 0
    for bound, count in zip(buckets, counts, strict=False):
        running += count
        if running >= q * total:
            return float(bound)
    return float("inf")


def suite_latency(args: Any, model: Path, clip: Path) -> str:
    runs = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="framechain-bench-") as tmp:
            config = chain_config(
                model,
                {"live": _live_camera(args, clip)},
                Path(tmp),
                args.imgsz,
                args.batch,
            )
            result = run_chain(
                config, Path(tmp), sample_every_s=1.0, stop_after_s=args.seconds
            )
        ages = [
            s.stats["track.live"]
            for s in result.samples
            if s.at > 5 and "frame_age_p50_s" in s.stats.get("track.live", {})
        ]
        track = result.stats["track.live"]
        runs.append(
            {
                "p50": _median([a["frame_age_p50_s"] for a in ages]),
                "p99": _median([a["frame_age_p99_s"] for a in ages]),
                "worst_p99": max(a["frame_age_p99_s"] for a in ages),
                "hist_p50": _histogram_quantile(track["latency"], 0.5),
                "hist_p99": _histogram_quantile(track["latency"], 0.99),
                "fps": float(track["fps"]),
            }
        )
    source = args.source or f"{clip.name} played live (paced, looped, lossy)"
    rows = [
        "| run | capture→event p50 (ms) | p99 (ms) | worst 1 s window p99 (ms) | "
        "histogram p50 / p99 bucket (ms) | fps |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for i, r in enumerate(runs, 1):
        rows.append(
            f"| {i} | {1000 * r['p50']:.0f} | {1000 * r['p99']:.0f} | "
            f"{1000 * r['worst_p99']:.0f} | ≤{1000 * r['hist_p50']:.0f} / "
            f"≤{1000 * r['hist_p99']:.0f} | {r['fps']:.1f} |"
        )
    return "\n".join(
        [
            f"source {source}, model {model.name}, imgsz {args.imgsz}, "
            f"{args.seconds:.0f} s per run, {os.cpu_count()} cores; capture→event = "
            "time from the packet's capture to its frame tracked and its rules "
            "evaluated (events handed to the sinks), medians of 1 s windows",
            "",
            *rows,
        ]
    )


def suite_soak(args: Any, model: Path, clip: Path) -> str:
    minutes = args.minutes
    with tempfile.TemporaryDirectory(prefix="framechain-soak-") as tmp:
        config = chain_config(
            model,
            {"live": _live_camera(args, clip)},
            Path(tmp),
            args.soak_imgsz,
            args.batch,
        )
        result = run_chain(
            config, Path(tmp), sample_every_s=10.0, stop_after_s=minutes * 60
        )
    samples = [
        s
        for s in result.samples
        if "track.live" in s.stats
        and len(s.rss_mb) == len(result.stats)
        and all(s.rss_mb.values())
    ]
    warm = next(s for s in samples if s.at >= 60)
    last = samples[-1]
    rows = [
        "| minute | RSS all stages (MB) | open fds | frame age p50 (ms) | p99 (ms) | "
        "frames tracked | dropped behind |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in samples:
        if int(s.at) % 60 >= 10 and s is not last:
            continue
        track = s.stats["track.live"]
        decode = s.stats.get("decode.live", {})
        rows.append(
            f"| {s.at / 60:.1f} | {sum(s.rss_mb.values()):.0f} | "
            f"{sum(s.fds.values())} | {1000 * track.get('frame_age_p50_s', 0):.0f} | "
            f"{1000 * track.get('frame_age_p99_s', 0):.0f} | "
            f"{track.get('frames', 0)} | "
            f"{decode.get('frames_dropped_behind', 0)} |"
        )
    growth = {
        name: 100 * (last.rss_mb[name] - warm.rss_mb[name]) / warm.rss_mb[name]
        for name in last.rss_mb
        if warm.rss_mb.get(name)
    }
    total_growth = (
        100
        * (sum(last.rss_mb.values()) - sum(warm.rss_mb.values()))
        / sum(warm.rss_mb.values())
    )
    early = [
        s.stats["track.live"]["frame_age_p99_s"]
        for s in samples
        if 60 <= s.at < 60 + minutes * 60 / 4
    ]
    late = [
        s.stats["track.live"]["frame_age_p99_s"]
        for s in samples
        if s.at >= minutes * 60 * 3 / 4
    ]
    source = args.source or f"{clip.name} played live (paced, looped, lossy)"
    return "\n".join(
        [
            f"{minutes:g} minutes, source {source}, model {model.name} at imgsz "
            f"{args.soak_imgsz} (slower than the source), {os.cpu_count()} cores; "
            "samples every 10 s, table every minute",
            "",
            *rows,
            "",
            f"RSS growth from minute 1 to the end: {total_growth:+.2f} % in all "
            f"(per stage: {', '.join(f'{n} {g:+.1f} %' for n, g in growth.items())}); "
            f"open fds {sum(warm.fds.values())} → {sum(last.fds.values())}; frame age "
            f"p99 first quarter {1000 * _median(early):.0f} ms, last quarter "
            f"{1000 * _median(late):.0f} ms; stage restarts "
            f"{sum(1 for s in result.stats.values() if s.get('restarts'))}",
        ]
    )


# -- idle cameras ---------------------------------------------------------------
def suite_idle(args: Any, model: Path) -> str:
    """What cameras that send nothing cost: the largest count of ``--cameras``, each
    an RTSP camera on a closed local port (reconnecting with backoff), measured from
    the stages' own CPU counters once everything has started."""
    n = max(int(c) for c in args.cameras.split(","))
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"rtsp://127.0.0.1:{sock.getsockname()[1]}/idle"
    settle_s, measure_s = 45.0, args.seconds
    with tempfile.TemporaryDirectory(prefix="framechain-bench-") as tmp:
        cameras = {
            f"cam{i}": {"source": {"kind": "rtsp", "url": url}} for i in range(n)
        }
        config = chain_config(model, cameras, Path(tmp), batch=args.batch)
        result = run_chain(
            config, Path(tmp), sample_every_s=5.0, stop_after_s=settle_s + measure_s
        )
    first = next(s for s in result.samples if s.at >= settle_s)
    last = result.samples[-1]
    span = last.at - first.at
    per_kind: dict[str, float] = {}
    for name, stats in last.stats.items():
        used = stats.get("cpu_s", 0.0) - first.stats.get(name, {}).get("cpu_s", 0.0)
        kind = name.split(".")[0]
        per_kind[kind] = per_kind.get(kind, 0.0) + used / span
    rows = [
        "| stages | processes | CPU (% of one core) |",
        "|---|---:|---:|",
        *(
            f"| {kind} | {sum(1 for s in last.stats if s.split('.')[0] == kind)} | "
            f"{100 * share:.2f} |"
            for kind, share in per_kind.items()
        ),
        f"| all | {len(last.stats)} | {100 * sum(per_kind.values()):.2f} |",
    ]
    return "\n".join(
        [
            f"{n} cameras that never answer (RTSP to a closed port, reconnecting with "
            f"backoff), model {model.name} loaded; stage CPU counters over "
            f"{span:.0f} s after {settle_s:.0f} s of start-up, {os.cpu_count()} cores",
            "",
            *rows,
        ]
    )
