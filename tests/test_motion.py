"""Motion-gated detection on a generated scene with long idle stretches: the same
events as without the gate, with at least 3× fewer frames through the detector."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import camera_config, framechain, read_events, write_config
from scenes import WIDTH, Walker, person_crops, render

FRAMES = 450  # 30 s at 15 fps; people on screen for about a fifth of it
WALKERS = [
    Walker(crop=0, start=(150, 120), end=(150, 470), first=60, last=110),  # down: in
    Walker(crop=1, start=(480, 470), end=(480, 150), first=250, last=300),  # up: out
    Walker(crop=2, start=(60, 440), end=(600, 440), first=255, last=320),  # into zone
]
RULES = [
    {"kind": "line", "name": "door", "start": [0, 300], "end": [WIDTH, 300]},
    {
        "kind": "zone",
        "name": "corner",
        "polygon": [[280, 330], [WIDTH, 330], [WIDTH, 480], [280, 480]],
    },
]


def run_scene(tmp: Path, clip: Path, gated: bool) -> tuple[list[dict], int, int]:
    camera = camera_config(clip, RULES)
    if gated:
        camera["decode"] = {"motion": {}}
    config = write_config(
        tmp / "scene.yaml",
        {"scene": camera},
        sinks=[{"kind": "sqlite", "path": str(tmp / "events.db")}],
        # people are 150 px tall: imgsz 320 finds them, at a quarter of the cost
        detector={"model": "yolo11n.onnx", "imgsz": 320},
    )
    result = framechain("run", str(config), "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    match = re.search(
        r"detect: (\d+) frames inferred(?:, (\d+) skipped)?", result.stdout
    )
    assert match, result.stdout
    return read_events(tmp / "events.db"), int(match.group(1)), int(match.group(2) or 0)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, assets: Path) -> Path:
    path = tmp_path_factory.mktemp("motion") / "idle.mp4"
    render(path, WALKERS, person_crops(assets / "yolo11n.onnx"), FRAMES)
    return path


def test_motion_gate_keeps_events_with_a_third_of_the_detector_calls(
    tmp_path: Path, clip: Path
) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "gated").mkdir()
    plain, plain_inferred, _ = run_scene(tmp_path / "plain", clip, gated=False)
    gated, gated_inferred, skipped = run_scene(tmp_path / "gated", clip, gated=True)
    assert plain_inferred == FRAMES
    assert gated_inferred + skipped == FRAMES
    assert plain_inferred >= 3 * gated_inferred, (plain_inferred, gated_inferred)
    kinds = {e["kind"] for e in plain}
    assert {"line_crossing", "zone_enter", "zone_exit"} <= kinds
    assert sorted(e["direction"] for e in plain if e["kind"] == "line_crossing") == [
        "in",
        "out",
    ]
    for event in plain + gated:
        del event["capture_ts"]  # wall clock of each run
    assert gated == plain
