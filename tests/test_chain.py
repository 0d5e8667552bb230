"""The default chain end to end: real processes under the supervisor, real video,
events in SQLite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import (
    REPO,
    children,
    end_run,
    framechain,
    poll_store,
    read_events,
    spawn_run,
    stage_pid,
)

EVENT_FIELDS = (
    "event_id",
    "kind",
    "seq",
    "track_id",
    "class_name",
    "direction",
    "value",
)


def demo_config(tmp: Path, assets: Path, record: bool = False) -> Path:
    """configs/demo.yaml, with its clip and store moved to absolute/tmp paths;
    ``record``: what track receives is recorded to ``tmp/track.fcrec``."""
    config = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    config["models_dir"] = str(assets)
    config["cameras"]["crowd"]["source"]["path"] = str(assets / "crowd.mp4")
    config["sinks"] = [{"kind": "sqlite", "path": str(tmp / "events.db")}]
    if record:
        config["links"] = {"record": {"track.crowd.in": str(tmp / "track.fcrec")}}
    path = tmp / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def comparable(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted(tuple(e[f] for f in EVENT_FIELDS) for e in events)


@pytest.fixture(scope="module")
def clean_folder(tmp_path_factory: pytest.TempPathFactory, assets: Path) -> Path:
    """One run of the demo, recording what track received."""
    tmp = tmp_path_factory.mktemp("clean")
    config = demo_config(tmp, assets, record=True)
    result = framechain("run", str(config), "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "framechain summary" in result.stdout
    assert "rror" not in result.stderr, result.stderr[-3000:]  # recorder closed last
    return tmp


@pytest.fixture(scope="module")
def clean_run(clean_folder: Path) -> list[dict[str, Any]]:
    return read_events(clean_folder / "events.db")


def test_demo_config_validates() -> None:
    """The README's default config must stay valid as the code changes."""
    result = framechain("validate", "configs/demo.yaml")
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_demo_stores_events(clean_run: list[dict[str, Any]]) -> None:
    """The demo run produces crossing and zone events for every frame range."""
    kinds = {e["kind"] for e in clean_run}
    assert kinds == {"line_crossing", "zone_occupancy", "zone_enter", "zone_exit"}
    crossings = [e for e in clean_run if e["kind"] == "line_crossing"]
    assert len(crossings) >= 3
    assert {e["direction"] for e in crossings} <= {"in", "out"}
    assert max(e["seq"] for e in clean_run) > 400  # the whole 460-frame clip was seen
    assert len({e["event_id"] for e in clean_run}) == len(clean_run)


def test_two_runs_give_the_same_events(
    tmp_path: Path, assets: Path, clean_run: list[dict[str, Any]]
) -> None:
    """A file source applies backpressure and drops nothing, so a rerun of the same
    file gives exactly the same events (pins lossy file reading / racy batching)."""
    result = framechain("run", str(demo_config(tmp_path, assets)), "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    assert comparable(read_events(tmp_path / "events.db")) == comparable(clean_run)


def test_tracker_matches_the_trackers_package_on_real_detections(
    clean_folder: Path,
) -> None:
    """The demo's own detections (a crowd, 460 frames) through our ByteTrack and
    the ``trackers`` package's: the same ids on every frame, the same filters."""
    from tracking import assert_same_tracks

    from pipeline.recording import recorded_frames

    frames, fps = recorded_frames(clean_folder / "track.fcrec")
    assert len(frames) == 460
    assert assert_same_tracks(frames, fps) > 3000


def _alive(pid: int) -> bool:
    """Running, not a zombie (which an orphan becomes where init does not reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return stat[0] != "Z"


def _max_seq(db: Path) -> int:
    seq = poll_store(db, "SELECT max(seq) FROM events")
    return -1 if seq is None else seq


@pytest.mark.slow
def test_kill_detect_mid_run_loses_nothing(
    tmp_path: Path, assets: Path, clean_run: list[dict[str, Any]]
) -> None:
    """kill -9 of the detect process mid-run: the supervisor restarts it, decode
    re-sends the frames that were in flight, and the stored events equal a clean
    run's: none lost, none stored twice (pins the end-to-end acknowledgement)."""
    process = spawn_run(demo_config(tmp_path, assets))
    try:
        deadline = time.monotonic() + 120
        while _max_seq(tmp_path / "events.db") < 120:
            assert time.monotonic() < deadline, "the chain made no progress"
            assert process.poll() is None, process.communicate()[1][-3000:]
            time.sleep(0.1)
        pid = stage_pid("detect", process.pid)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=180)
    finally:
        end_run(process)
    assert process.returncode == 0, stderr[-3000:]
    assert "restarting detect" in stderr
    assert "stage restarts: 1" in stdout
    events = read_events(tmp_path / "events.db")
    assert comparable(events) == comparable(clean_run)


@pytest.mark.slow
@pytest.mark.parametrize("ctrl_c", [False, True], ids=["SIGTERM", "Ctrl-C"])
def test_stop_ends_the_streams_and_exits_within_10_s(
    tmp_path: Path, assets: Path, ctrl_c: bool
) -> None:
    """SIGTERM to `framechain run` mid-stream (a camera-paced file), or Ctrl-C
    (SIGINT to its whole process group, as a terminal sends it): every stage
    drains and exits, the run ends within 10 s with status 0, the events produced so
    far are stored, and no stage process or shared-memory ring is left behind.

    The end of stream must reach every stage, not the drain deadline. SIGTERM to
    every stage at once lost it (a stage that passed it on exited, and libzmq
    dropped what it had queued), so a stop took the whole 8 s under load, warned,
    and lost track's last events: here the partial per-minute aggregate."""
    from pipeline.shm import shm_directory

    config = yaml.safe_load(demo_config(tmp_path, assets).read_text())
    config["cameras"]["crowd"]["source"]["realtime"] = True
    config["cameras"]["crowd"]["aggregate_s"] = 60
    rings_before = set(shm_directory().glob("fc-*"))
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(config))
    process = spawn_run(path)  # in its own process group, for Ctrl-C
    try:
        deadline = time.monotonic() + 60
        while _max_seq(tmp_path / "events.db") < 40:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.1)
        children = [stage_pid(n, process.pid) for n in ("capture.crowd", "detect")]
        rings = set(shm_directory().glob("fc-*")) - rings_before
        assert rings, "the running chain should hold a shared-memory ring"
        started = time.monotonic()
        if ctrl_c:
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
        stopped_in = time.monotonic() - started
    finally:
        end_run(process)
    assert process.returncode == 0, stderr[-3000:]
    for sign in ("drain deadline passed", "did not end within", "Traceback"):
        assert sign not in stderr, stderr[-3000:]
    assert stopped_in <= 10.0
    assert "framechain summary" in stdout
    assert 40 <= _max_seq(tmp_path / "events.db") < 440  # stopped mid-clip
    counts = [e for e in read_events(tmp_path / "events.db") if e["kind"] == "counts"]
    assert len(counts) == 1 and json.loads(counts[0]["data"])["partial"], counts
    for pid in children:
        assert pid is not None and not Path(f"/proc/{pid}").exists()
    assert not (rings & set(shm_directory().glob("fc-*")))


@pytest.mark.slow
@pytest.mark.parametrize("when", ["starting", "running"])
def test_stages_exit_when_the_supervisor_is_killed(
    tmp_path: Path, assets: Path, when: str
) -> None:
    """kill -9 of `framechain run` (the OOM killer, a container's init dying): the
    kernel sends every stage SIGTERM (PR_SET_PDEATHSIG) and each exits within its
    drain deadline, rather than living on, blocked on a dead neighbour, holding the
    camera and the rings. "starting" kills it while the stages are still importing:
    a stage must not then take init, its new parent, for its supervisor (a CI run
    hung on exactly that: a network sink with its broker away retried forever)."""
    from framechain.app import load as load_config
    from framechain.plan import stage_names
    from pipeline.stageplan import StagePlan

    config = yaml.safe_load(demo_config(tmp_path, assets).read_text())
    config["cameras"]["crowd"]["source"]["realtime"] = True  # outlasts the bound
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(config))
    stages = len(stage_names(load_config(path)))
    process = spawn_run(path)
    try:
        deadline = time.monotonic() + 60
        while (
            len(children(process.pid)) < stages
            if when == "starting"
            else _max_seq(tmp_path / "events.db") < 40
        ):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.01)
        stage_pids = children(process.pid)
        assert len(stage_pids) == stages
        os.kill(process.pid, signal.SIGKILL)
        killed = time.monotonic()
        try:  # ends when the last stage has closed its end of the output pipes
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            alive = [title for pid, title in stage_pids.items() if _alive(pid)]
            pytest.fail(f"stages outlived their supervisor by 30 s: {alive}")
        ended_in = time.monotonic() - killed
    finally:
        end_run(process)
    # a process closes its pipes on the way out, a moment before it is gone
    lingering = time.monotonic() + 2.0
    while [pid for pid in stage_pids if _alive(pid)] and time.monotonic() < lingering:
        time.sleep(0.05)
    assert not [stage_pids[pid] for pid in stage_pids if _alive(pid)]
    assert ended_in <= StagePlan.drain_timeout_s + 4.0  # and time to exit
