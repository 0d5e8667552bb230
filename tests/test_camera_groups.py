"""Camera groups (``supervisor.cameras_per_process``): two cameras share one
capture, one decode and one track process, and the chain keeps every guarantee
it gives with a process per camera: the same events, field for field; exactly
once through kill -9s of each group process; and a camera with a damaged file
costs the other camera of its group nothing."""

from __future__ import annotations

import random
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
import zmq
from conftest import CROWD_LINE, end_run, read_events, spawn_run
from live import ChainRun, RtspServer
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

from pipeline.group import HELD_RETRY_S, group_plan
from pipeline.messages import Ack
from pipeline.stage import Emit, Stage
from pipeline.stageplan import StagePlan
from pipeline.transport import Endpoint

pytestmark = pytest.mark.slow

GROUPED = {"cameras_per_process": 2}
GROUPS = {kind: f"{kind}.north..south" for kind in ("capture", "decode", "track")}


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


class _Source(Stage):
    """Sends one acknowledgement per call, as a file source sends packets."""

    def __init__(self, stream: str) -> None:
        self.stream, self.sent = stream, 0

    def produce(self) -> list[Emit]:
        self.sent += 1
        return [Emit("out", Ack(self.stream, self.sent))]

    def serves(self, stream_id: str) -> bool:
        return stream_id == self.stream

    def process(self, batch: Any) -> list[Emit]:
        return []


def test_a_member_whose_consumer_is_full_does_not_hold_up_the_others() -> None:
    """North's output cannot take more: south still produces, north is asked
    again shortly (not at the runtime's next idle timeout), and its ports keep
    their member's name."""
    plans = {
        f"capture.{cam}": StagePlan(
            f"capture.{cam}",
            lambda cam=cam: _Source(cam),
            (Endpoint("out", zmq.PUSH, f"ipc:///nonexistent/{cam}", True),),
        )
        for cam in ("north", "south")
    }
    group = group_plan("capture.north..south", plans).build()
    group.outputs_ready(lambda port: port != "capture.north/out")
    emits = list(group.produce())
    assert [e.port for e in emits] == ["capture.south/out"]
    assert group.next_awake() == HELD_RETRY_S
    group.outputs_ready(lambda port: True)
    assert sorted(e.port for e in group.produce()) == [
        "capture.north/out",
        "capture.south/out",
    ]
    assert group.next_awake() is None
    # a message is checked against the member whose port it came in on
    assert group.serves_on("capture.north/out", "north")
    assert not group.serves_on("capture.north/out", "south")


def test_a_live_camera_down_leaves_its_group_mate_running(
    tmp_path: Path, assets: Path
) -> None:
    """Two RTSP cameras in one group; one camera's server dies for 6 s: the other
    keeps delivering at its pace meanwhile, the dead one is offline and then back,
    and no process restarts."""
    servers = {cam: RtspServer(assets / "crowd.mp4") for cam in ("north", "south")}
    for server in servers.values():
        server.start()
    config = {
        "models_dir": str(assets),
        "supervisor": GROUPED,
        "detector": {"model": "yolo11n.onnx", "imgsz": 320},
        "cameras": {
            cam: {"source": {"kind": "rtsp", "url": s.url}, "rules": [CROWD_LINE]}
            for cam, s in servers.items()
        },
        "sinks": [{"kind": "sqlite", "path": str(tmp_path / "events.db")}],
    }
    run = ChainRun(tmp_path, config).start()

    def frames(cam: str) -> int:
        return int(run.stats(f"track.{cam}").get("frames", 0))

    try:
        run.wait_for(lambda: min(frames("north"), frames("south")) > 20, 60, "frames")
        servers["north"].kill()
        run.wait_for(
            lambda: run.stats("capture.north").get("state") == "offline",
            20,
            "north offline",
        )
        before, started = frames("south"), time.monotonic()
        time.sleep(6)
        south_fps = (frames("south") - before) / (time.monotonic() - started)
        servers["north"].start()
        back = frames("north")
        run.wait_for(lambda: frames("north") > back + 10, 30, "north back")
        assert run.stop() == 0
    finally:
        if run.code is None:
            run.stop()
        for server in servers.values():
            server.kill()
    print(f"south during north's outage: {south_fps:.1f} fps")
    assert south_fps > 15, south_fps  # the clip's 24 fps, less what a busy box drops
    assert run.supervisor.restart_count == 0
