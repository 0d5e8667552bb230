"""Two checkouts of framechain, or two camera settings, the same chain, run
alternately: what a change did.

    .venv/bin/python benchmarks/compare_checkouts.py BASE_DIR NEW_DIR \\
        --cameras 1 --clip ../shared/assets/crowd.mp4 --rounds 3
    .venv/bin/python benchmarks/compare_checkouts.py . . --clip CLIP \\
        --new-camera '{"decode": {"resize": [640, 360]}}'

BASE_DIR and NEW_DIR are checkouts (``git worktree add /tmp/base COMMIT``), or the
same one twice with ``--base-camera`` / ``--new-camera`` (JSON merged into every
camera's settings on that side). Each round runs the chain once per side (order
alternating between rounds, so a machine that speeds up or slows down over the run
favours neither), every stage process importing that side's checkout. Per run it
prints aggregate fps, the CPU seconds of each kind of stage and the peak RSS of the
first camera's track process (and, where the checkout has them, the size and write
rate of each camera's track checkpoint); then the medians and new / base ratios.
One chain per run, nothing else should be running.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

# Runs inside the checkout under test (its cwd), so that checkout's pipeline is used.
_ONE_RUN = """
import json, sys, tempfile
from pathlib import Path
sys.path.insert(0, ".")
if Path("pipeline/benchchain.py").is_file():  # before benchmarks left pipeline/
    from pipeline.benchchain import chain_config, file_camera, run_chain
else:
    from benchmarks.chain import chain_config, file_camera, run_chain
model, clip, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
extra = json.loads(sys.argv[4])
with tempfile.TemporaryDirectory(prefix="framechain-ab-") as tmp:
    cameras = {f"cam{i}": {**file_camera(clip), **extra} for i in range(n)}
    result = run_chain(chain_config(model, cameras, Path(tmp)), Path(tmp), 2.0)
if result.code != 0:
    sys.exit(f"the chain failed: exit {result.code}")
cpu = {}
for name, stats in result.stats.items():
    kind = name.split(".")[0]
    cpu[kind] = cpu.get(kind, 0.0) + stats.get("cpu_s", 0.0)
print(json.dumps({
    "fps": sum(result.stats[f"track.cam{i}"]["fps"] for i in range(n)),
    "frames": sum(result.stats[f"track.cam{i}"]["frames"] for i in range(n)),
    "cpu_s": cpu,
    "track_rss_mb": max(s.rss_mb.get("track.cam0", 0.0) for s in result.samples),
    # per camera; 0 on a checkout without track checkpoints
    "checkpoint_kb": sum(
        result.stats[f"track.cam{i}"].get("checkpoint_bytes", 0) for i in range(n)
    ) / n / 1024,
    "checkpoints_per_s": sum(
        result.stats[f"track.cam{i}"].get("checkpoints", 0) for i in range(n)
    ) / n / result.wall_s,
    "checkpoint_kb_per_s": sum(
        result.stats[f"track.cam{i}"].get("checkpoint_bytes_written", 0)
        for i in range(n)
    ) / n / 1024 / result.wall_s,
}))
"""


def one_run(
    checkout: Path, model: Path, clip: Path, cameras: int, camera: str = "{}"
) -> dict:
    """One chain from ``checkout``; ``camera``: JSON merged into each camera."""
    out = subprocess.run(
        [sys.executable, "-c", _ONE_RUN, str(model), str(clip), str(cameras), camera],
        cwd=checkout,
        env={**os.environ, "PYTHONPATH": str(checkout)},
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        sys.exit(f"{checkout}: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cpu_of(kind: str) -> Callable[[dict], float]:
    return lambda run: float(run["cpu_s"].get(kind, 0.0))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("base", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--cameras", type=int, default=1)
    parser.add_argument("--clip", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    for side in ("base", "new"):
        parser.add_argument(
            f"--{side}-camera",
            default="{}",
            help=f"JSON merged into every camera's settings in the {side} runs",
        )
    args = parser.parse_args()
    settings = {"base": args.base_camera, "new": args.new_camera}
    for side, text in settings.items():
        try:
            if not isinstance(json.loads(text), dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            parser.error(f"--{side}-camera: {e}")
    clip = args.clip.resolve()
    models = Path(os.environ.get("FRAMECHAIN_MODELS", clip.parent))
    model = (args.model or models / "yolo11n.onnx").resolve()
    runs: dict[str, list[dict]] = {"base": [], "new": []}
    for round_ in range(args.rounds):
        order = ["base", "new"] if round_ % 2 == 0 else ["new", "base"]
        for name in order:
            checkout = (args.base if name == "base" else args.new).resolve()
            result = one_run(checkout, model, clip, args.cameras, settings[name])
            runs[name].append(result)
            cpu = ", ".join(f"{k} {v:.2f}" for k, v in sorted(result["cpu_s"].items()))
            print(
                f"round {round_ + 1} {name}: {result['fps']:.2f} fps, "
                f"{result['frames']} frames, CPU s: {cpu}, "
                f"track RSS {result['track_rss_mb']:.0f} MiB",
                flush=True,
            )

    def median(name: str, pick: Callable[[dict], float]) -> float:
        return statistics.median(pick(r) for r in runs[name])

    print(f"\n{args.cameras} camera(s), {clip.name}, {args.rounds} rounds (medians):")
    for side, text in settings.items():
        if text != "{}":
            print(f"{side} camera settings: {text}")
    print("| measure | base | new | new / base |\n|---|---:|---:|---:|")
    measures: dict[str, Callable[[dict], float]] = {"aggregate fps": lambda r: r["fps"]}
    for kind in sorted(runs["base"][0]["cpu_s"]):
        measures[f"{kind} CPU s"] = _cpu_of(kind)
    measures["track RSS MiB"] = lambda r: r["track_rss_mb"]
    measures["checkpoint KiB per camera"] = lambda r: r.get("checkpoint_kb", 0.0)
    measures["checkpoints/s per camera"] = lambda r: r.get("checkpoints_per_s", 0.0)
    measures["checkpoint KiB/s per camera"] = lambda r: r.get(
        "checkpoint_kb_per_s", 0.0
    )
    for label, pick in measures.items():
        base, new = median("base", pick), median("new", pick)
        ratio = f"{new / base:.2f}" if base else "-"
        print(f"| {label} | {base:.2f} | {new:.2f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
