"""``framechain bench latency|soak|idle``: a paced live camera's frame age, an
hour's memory and CPU, and what idle cameras cost."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.chain import chain_config, file_camera, run_chain
from benchmarks.suite import _median


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
