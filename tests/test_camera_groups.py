"""Camera groups (``supervisor.cameras_per_process``): two cameras share one
capture, one decode and one track process, and the chain keeps every guarantee
it gives with a process per camera: the same events, field for field; exactly
once through kill -9s of each group process; and a camera with a damaged file
costs the other camera of its group nothing."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import end_run, read_events, spawn_run
from test_recovery import (
    assert_same_events,
    chain_config,
    comparable,
    finish,
    kill_stage,
    restarts,
    wait_for_events,
)
from test_recovery import clean_run as clean_run  # a fixture, used by name

pytestmark = pytest.mark.slow

GROUPED = {"cameras_per_process": 2}
GROUPS = {kind: f"{kind}.north+1" for kind in ("capture", "decode", "track")}


def grouped_config(folder: Path, assets: Path) -> Path:
    from test_recovery import SUPERVISOR

    return chain_config(folder, assets, supervisor={**SUPERVISOR, **GROUPED})


def test_a_grouped_chain_stores_what_a_process_per_camera_does(
    tmp_path: Path, assets: Path, clean_run: dict[str, dict[str, Any]]
) -> None:
    err = finish(spawn_run(grouped_config(tmp_path, assets)))
    # capture, decode, track: one process each for both cameras (9 stages -> 6)
    assert "all 6 stages running" in err, err[-3000:]
    got = comparable(read_events(tmp_path / "events.db"), tmp_path)
    assert_same_events(got, clean_run)


def test_group_processes_killed_lose_and_repeat_nothing(
    tmp_path: Path, assets: Path, clean_run: dict[str, dict[str, Any]]
) -> None:
    """Each group process killed twice while both streams run: every member
    recovers as a process of its own would, and the store is the clean run's."""
    process = spawn_run(grouped_config(tmp_path, assets))
    try:
        wait_for_events(process, tmp_path / "events.db", 5)
        for name in [*GROUPS.values(), *GROUPS.values()]:
            kill_stage(process, name)
            # the next kill waits for its target to run again (kill_stage)
        err = finish(process)
    finally:
        end_run(process)
    assert all(restarts(err, name) >= 2 for name in GROUPS.values()), err[-3000:]
    got = comparable(read_events(tmp_path / "events.db"), tmp_path)
    assert_same_events(got, clean_run)


def _damaged_copy(clip: Path, folder: Path) -> Path:
    """The clip with bits flipped through its stream (the first tenth, header
    and index, left whole)."""
    data = bytearray(clip.read_bytes())
    rng = random.Random(7)
    start = len(data) // 10
    for _ in range(int(len(data) * 8 * 1e-4)):
        data[rng.randrange(start, len(data))] ^= 1 << rng.randrange(8)
    path = folder / "damaged.mp4"
    path.write_bytes(bytes(data))
    return path


def test_a_damaged_camera_costs_its_group_mate_nothing(
    tmp_path: Path, assets: Path, clean_run: dict[str, dict[str, Any]]
) -> None:
    """North reads a damaged copy of the clip, south the clip, in one group:
    south's events are exactly the clean run's, nothing restarts, and the run
    ends by saying what was wrong with north's file."""
    damaged = _damaged_copy(assets / "crowd.mp4", tmp_path)
    config = grouped_config(tmp_path, assets)
    settings = yaml.safe_load(config.read_text())
    north = settings["cameras"]["north"]
    north["source"] = {**north["source"], "path": str(damaged)}
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    err = finish(spawn_run(config))
    assert "exited with status" not in err, err[-3000:]
    assert re.search(r"warning: camera north\b.*damaged\.mp4 is damaged", err), err[
        -3000:
    ]
    got = comparable(read_events(tmp_path / "events.db"), tmp_path)
    south = {i: e for i, e in got.items() if e["stream_id"] == "south"}
    clean_south = {i: e for i, e in clean_run.items() if e["stream_id"] == "south"}
    assert_same_events(south, clean_south)
