"""``framechain bench memory``: what each camera costs in memory.

N paced cameras (a file played as a camera: looped, frames dropped when the chain
falls behind), the detector at a reduced rate (``--target-fps`` per camera, so that
32 cameras fit two cores), measured after ``--seconds`` of running: RSS and PSS
(``/proc/PID/smaps_rollup``; PSS splits each shared page between the processes that
map it, so the stages' PSS adds up to what the chain really holds) of every stage
process, by stage kind and in all, and the PSS each camera past the first adds.

``--baseline DIR`` runs the same measurement on another checkout (``git worktree add
/tmp/base COMMIT``) in the same invocation, the two sides alternating over
``--repeats``; every stage process imports its side's code. The supervisor runs in
the measuring process and is not counted (it is one per box, not per camera).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

# Runs with cwd = the checkout measured, so that checkout's framechain is the one
# under test; it uses only what every checkout has (load, supervisor_for).
_ONE_RUN = r"""
import json, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, ".")
import yaml
from framechain.app import load, supervisor_for

model, clip = Path(sys.argv[1]), Path(sys.argv[2])
n, settle_s, target_fps = int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
per_process = int(sys.argv[6])

def memory(pid):
    found = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss", "Swap"):
                found[key.lower()] = int(rest.split()[0]) / 1024
    except OSError:
        pass
    return found

line = {"kind": "line", "name": "mid", "start": [0, 200], "end": [4000, 200]}
with tempfile.TemporaryDirectory(prefix="framechain-memory-") as tmp:
    cameras = {
        f"cam{i}": {
            "source": {"kind": "file", "path": str(clip), "live": True, "loop": True},
            "decode": {"target_fps": target_fps},
            "rules": [line],
        }
        for i in range(n)
    }
    config = {
        "models_dir": str(model.parent),
        "log_level": "WARNING",
        "cameras": cameras,
        "detector": {"model": model.name},
        "sinks": [{"kind": "sqlite", "path": f"{tmp}/events.db"}],
    }
    if per_process:  # 0: the default (a setting older checkouts do not know)
        config["supervisor"] = {"cameras_per_process": per_process}
    path = Path(tmp) / "memory.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    runtime = Path(tmp) / "run"
    runtime.mkdir(mode=0o700)
    supervisor = supervisor_for(load(path), runtime, watch_file=False)
    started = time.monotonic()
    measured, startup = {}, {}

    def on_tick(sup):
        now = time.monotonic()
        for name, child in sup.children.items():
            if name not in startup and child.state == "running":
                startup[name] = now - child.started  # to its first heartbeat
        if now - started < settle_s or measured:
            return
        for name, child in sup.children.items():
            if child.process is not None and child.process.poll() is None:
                measured[name] = memory(child.process.pid)
        sup.stop_requested = True

    supervisor.run(on_tick=on_tick)
views = supervisor.snapshot()["stages"]  # camera groups: each member
frames = {name: v["stats"].get("frames", 0) for name, v in views.items()
          if name.startswith("track.")}
for name, seconds in startup.items():
    measured.get(name, {})["startup_s"] = seconds
print(json.dumps({"processes": measured, "frames": frames}))
"""

KINDS = ("capture", "decode", "detect", "track", "sink", "annotate")


def _measure(
    checkout: Path, model: Path, clip: Path, n: int, args: Any, per_process: int
) -> dict[str, Any]:
    target = args.target_fps if args.target_fps else max(1.0, 48.0 / n)
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _ONE_RUN,
            str(model),
            str(clip),
            str(n),
            str(args.seconds),
            str(target),
            str(per_process),
        ],
        cwd=checkout,
        env={**os.environ, "PYTHONPATH": str(checkout)},  # its stages too
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0 or not out.stdout.strip():
        raise RuntimeError(
            f"memory run of {n} cameras in {checkout} failed: {out.stderr[-2000:]}"
        )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if len(result["frames"]) < n or not all(result["frames"].values()):
        raise RuntimeError(
            f"{checkout}: {len(result['processes'])} stages measured, frames per "
            f"camera {sorted(result['frames'].values())}: not every camera ran"
        )
    return result


def _by_kind(processes: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    kinds: dict[str, dict[str, float]] = {}
    for name, mem in processes.items():
        kind = name.split(".")[0]
        row = kinds.setdefault(kind, dict.fromkeys(("processes", "rss", "pss"), 0.0))
        row["processes"] += 1
        for key in ("rss", "pss"):
            row[key] += mem.get(key, 0.0)
        row["startup_s"] = max(row.get("startup_s", 0.0), mem.get("startup_s", 0.0))
    return kinds


def _total(result: dict[str, Any], key: str) -> float:
    return float(sum(m.get(key, 0.0) for m in result["processes"].values()))


def suite_memory(args: Any, model: Path, clip: Path) -> str:
    counts = sorted({int(c) for c in args.cameras.split(",")} | {1})
    here = Path(__file__).resolve().parent.parent
    sides = {"new": here}
    if args.baseline:
        sides = {"base": Path(args.baseline).resolve(), "new": here}
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for repeat in range(args.repeats):
        order = list(sides.items())
        if repeat % 2:
            order.reverse()  # neither side always goes first
        for n in counts:
            for side, checkout in order:
                print(f"repeat {repeat + 1}, {side}, {n} cameras", file=sys.stderr)
                per_process = (args.cameras_per_process or 0) if side == "new" else 0
                runs.setdefault((side, n), []).append(
                    _measure(checkout, model, clip, n, args, per_process)
                )
    return _table(runs, sides, counts, args, model, clip)


def _median_of(results: list[dict[str, Any]], key: str) -> float:
    return statistics.median(_total(r, key) for r in results)


def _table(
    runs: dict[tuple[str, int], list[dict[str, Any]]],
    sides: dict[str, Path],
    counts: list[int],
    args: Any,
    model: Path,
    clip: Path,
) -> str:
    rows = [
        "| side | cameras | processes | RSS MiB | PSS MiB | PSS per extra camera "
        "MiB | swap MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    per_camera: dict[str, dict[int, float]] = {}
    for side in sides:
        one = _median_of(runs[(side, 1)], "pss")
        for n in counts:
            results = runs[(side, n)]
            pss = _median_of(results, "pss")
            extra = (pss - one) / (n - 1) if n > 1 else 0.0
            per_camera.setdefault(side, {})[n] = extra
            rows.append(
                f"| {side} | {n} | {len(results[0]['processes'])} | "
                f"{_median_of(results, 'rss'):.0f} | {pss:.0f} | "
                f"{extra:.1f} | {_median_of(results, 'swap'):.0f} |"
                if n > 1
                else f"| {side} | 1 | {len(results[0]['processes'])} | "
                f"{_median_of(results, 'rss'):.0f} | {pss:.0f} | | "
                f"{_median_of(results, 'swap'):.0f} |"
            )
    kind_rows = [
        "| side | cameras | stage kind | processes | RSS MiB per process | PSS MiB "
        "per process | PSS MiB per camera | start-up s (slowest) |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    most = max(counts)
    for side in sides:
        kinds = _by_kind(runs[(side, most)][0]["processes"])
        for kind in KINDS:
            if kind in kinds:
                row = kinds[kind]
                count = row["processes"]
                kind_rows.append(
                    f"| {side} | {most} | {kind} | {count:.0f} | "
                    f"{row['rss'] / count:.0f} | {row['pss'] / count:.0f} | "
                    f"{row['pss'] / most:.1f} | {row['startup_s']:.1f} |"
                )
    ratios = []
    if "base" in per_camera:
        for n in counts[1:]:
            base, new = per_camera["base"][n], per_camera["new"][n]
            if base > 0:
                ratios.append(
                    f"{n} cameras: new/base PSS per extra camera {new / base:.2f}"
                )
    header = (
        f"{clip.name} played as {', '.join(map(str, counts))} cameras, model "
        f"{model.name}, decode target_fps "
        f"{args.target_fps or 'max(1, 48/N)'}, measured after {args.seconds:.0f} s, "
        f"medians of {args.repeats} repeats"
        + f"; new: cameras_per_process {args.cameras_per_process or 'auto'}"
        + (
            f"; base = {sides['base']}, one process per camera"
            if "base" in sides
            else ""
        )
    )
    return "\n".join([header, "", *rows, "", *kind_rows, "", "; ".join(ratios)])
