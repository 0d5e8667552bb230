"""Running the real chain inside a benchmark: a config in a temporary folder, the
supervisor in this process, and samples of every stage's stats, memory and open
files while it runs. Shared by the ``framechain bench`` suites."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class Sample:
    at: float  # seconds since the chain started
    rss_mb: dict[str, float]
    fds: dict[str, int]
    stats: dict[str, dict[str, Any]]


@dataclass
class ChainResult:
    code: int
    wall_s: float
    stats: dict[str, dict[str, Any]]
    samples: list[Sample] = field(default_factory=list)


def proc_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def proc_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def run_chain(
    config: dict[str, Any],
    tmp: Path,
    sample_every_s: float | None = None,
    stop_after_s: float | None = None,
) -> ChainResult:
    """Run ``config`` to completion (or for ``stop_after_s``), sampling every
    ``sample_every_s`` seconds when given."""
    from framechain.app import load, supervisor_for
    from pipeline.shm import remove_stale_rings, ring_prefix
    from pipeline.supervisor import Supervisor

    path = tmp / "bench.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    loaded = load(path)
    runtime = tmp / "run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    supervisor = supervisor_for(loaded, runtime, watch_file=False)
    samples: list[Sample] = []
    started = time.perf_counter()
    next_sample = started + (sample_every_s or 0)

    def on_tick(sup: Supervisor) -> None:
        nonlocal next_sample
        now = time.perf_counter()
        if stop_after_s is not None and now - started >= stop_after_s:
            sup.stop_requested = True
        if sample_every_s is None or now < next_sample:
            return
        next_sample = now + sample_every_s
        pids = {
            name: child.process.pid
            for name, child in sup.children.items()
            if child.process is not None
        }
        samples.append(
            Sample(
                now - started,
                {name: proc_rss_mb(pid) for name, pid in pids.items()},
                {name: proc_fds(pid) for name, pid in pids.items()},
                _stage_stats(sup),
            )
        )

    code = supervisor.run(on_tick=on_tick)
    wall = time.perf_counter() - started
    remove_stale_rings(ring_prefix(runtime))
    return ChainResult(code, wall, _stage_stats(supervisor), samples)


def _stage_stats(supervisor: Any) -> dict[str, dict[str, Any]]:
    """Each stage's last stats by name; a camera group's members each by theirs
    (``track.cam3`` whatever process it ran in)."""
    stages = supervisor.snapshot()["stages"]
    return {name: dict(stage["stats"]) for name, stage in stages.items()}


def file_camera(clip: Path, live: bool = False) -> dict[str, Any]:
    """A camera on a file, with the benchmark's one counting line; ``live``: played
    as a camera, looped, frames dropped when the chain falls behind."""
    return {
        "source": {"kind": "file", "path": str(clip), "live": live, "loop": live},
        "rules": [
            {"kind": "line", "name": "mid", "start": [0, 200], "end": [4000, 200]}
        ],
    }


def chain_config(
    model: Path,
    cameras: dict[str, Any],
    tmp: Path,
    imgsz: int = 640,
    batch: int | None = None,
) -> dict[str, Any]:
    """The benchmark's chain; ``batch``: detector.max_batch (default: the
    detector's own, which depends on the runtime)."""
    detector: dict[str, Any] = {"model": model.name, "imgsz": imgsz}
    if batch is not None:
        detector["max_batch"] = batch
    return {
        "models_dir": str(model.parent),
        "log_level": "WARNING",
        "cameras": cameras,
        "detector": detector,
        "sinks": [{"kind": "sqlite", "path": str(tmp / "events.db")}],
    }
