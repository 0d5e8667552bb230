"""Nothing lost, nothing twice: real chains killed with real signals.

Every test here runs ``framechain run`` as an operator would and kills its
processes with ``kill -9`` (one stage, many stages, or the whole process group
with the supervisor), then compares the stored events with a clean run of the
same config, id by id and field by field."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    CROWD_LEFT_HALF,
    CROWD_LINE,
    end_run,
    free_port,
    poll_store,
    read_events,
    spawn_run,
    stage_pid,
    wait_until,
    write_config,
)
from live import RtspServer

from framechain.rundir import SUPERVISOR_PID_FILE
from pipeline.shm import ring_prefix, shm_directory

pytestmark = pytest.mark.slow

# Generous restart limits: these tests kill more often than a real failure would.
SUPERVISOR = {
    "max_restarts": 50,
    "restart_window_s": 60,
    "restart_backoff_s": 0.2,
    "restart_backoff_max_s": 1.0,
    "watch_config": False,
}
# Wall-clock fields: a frame read again after a restart is read at another time.
WALL_CLOCK_FIELDS = {"capture_ts"}
STAGE_KINDS = ("capture", "decode", "detect", "track", "annotate", "sink")


def chain_config(folder: Path, assets: Path, **sections: Any) -> Path:
    """Two cameras on the crowd clip, paced like cameras (19 s), a line and a zone
    on one, a line on the other; snapshots and annotated video on the first. The
    model runs at 320 so that two cameras keep up on two cores."""
    folder.mkdir(parents=True, exist_ok=True)
    clip = {"kind": "file", "path": str(assets / "crowd.mp4"), "realtime": True}
    cameras = {
        "north": {
            "source": clip,
            "rules": [CROWD_LINE, CROWD_LEFT_HALF],
            "snapshots": {"directory": str(folder / "snapshots")},
            "annotate": {"video": str(folder / "north.mp4")},
        },
        "south": {"source": clip, "rules": [CROWD_LINE]},
    }
    settings = {
        "supervisor": SUPERVISOR,
        "detector": {"model": "yolo11n.onnx", "imgsz": 320},
        **sections,
    }
    return write_config(folder / "chain.yaml", cameras, **settings)


def comparable(events: list[dict[str, Any]], folder: Path) -> dict[str, dict[str, Any]]:
    """event id -> every field but the wall-clock ones, snapshot paths relative
    to the run's folder."""
    out = {}
    for event in events:
        fields = {k: v for k, v in event.items() if k not in WALL_CLOCK_FIELDS}
        fields["snapshot"] = fields["snapshot"].replace(str(folder), "<run>")
        out[event["event_id"]] = fields
    return out


def assert_same_events(
    got: dict[str, dict[str, Any]], clean: dict[str, dict[str, Any]]
) -> None:
    missing, extra = sorted(clean.keys() - got.keys()), sorted(got.keys() - clean)
    assert not missing and not extra, f"missing {missing[:8]}, extra {extra[:8]}"
    differ = [i for i in clean if got[i] != clean[i]]
    assert not differ, {
        i: {k: (clean[i][k], got[i][k]) for k in clean[i] if clean[i][k] != got[i][k]}
        for i in differ[:3]
    }


def finish(process: subprocess.Popen[str], timeout: float = 150) -> str:
    """Wait for a run to end by itself; its stderr."""
    try:
        _, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        end_run(process)
        pytest.fail("the run did not end")
    assert process.returncode == 0, err[-3000:]
    return err


@pytest.fixture(scope="module")
def clean_run(
    tmp_path_factory: pytest.TempPathFactory, assets: Path
) -> dict[str, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("clean")
    finish(spawn_run(chain_config(folder, assets)))
    events = comparable(read_events(folder / "events.db"), folder)
    # the rules fire on both cameras, and every kind the clip has is there
    assert {e["stream_id"] for e in events.values()} == {"north", "south"}
    assert {"line_crossing", "zone_enter", "zone_exit"} <= {
        e["kind"] for e in events.values()
    }
    assert len(events) > 100
    return events


def stage_name(kind: str, camera: str) -> str:
    if kind == "detect":
        return "detect"
    if kind == "sink":
        return "sink.sqlite"
    if kind == "annotate":
        return "annotate.north"  # only north is annotated
    return f"{kind}.{camera}"


def kill_stage(process: subprocess.Popen[str], name: str) -> None:
    """SIGKILL a stage as soon as it runs (a stage still being restarted is waited
    for: a kill must hit a working process)."""
    wait_until(
        lambda: stage_pid(name, process.pid) is not None,
        30,
        f"{name} to run",
        alive=lambda: process.poll() is None,
    )
    pid = stage_pid(name, process.pid)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)


def wait_for_events(process: subprocess.Popen[str], db: Path, count: int) -> None:
    wait_until(
        lambda: (poll_store(db, "SELECT COUNT(*) FROM events") or 0) >= count,
        60,
        f"{count} events stored",
        alive=lambda: process.poll() is None,
    )


def restarts(err: str, name: str) -> int:
    return err.count(f"stage {name} exited with status -9")


def test_kill_storm_over_every_stage_kind(
    tmp_path: Path, assets: Path, clean_run: dict[str, dict[str, Any]]
) -> None:
    """Twelve kill -9s, two of every stage kind, alternating the cameras, while
    both streams run: the stored events are the clean run's."""
    process = spawn_run(chain_config(tmp_path, assets))
    try:
        wait_for_events(process, tmp_path / "events.db", 5)
        killed = []
        for n in range(12):
            name = stage_name(STAGE_KINDS[n % 6], ("north", "south")[n % 2])
            kill_stage(process, name)
            killed.append(name)
            time.sleep(0.9)
        err = finish(process)
    finally:
        end_run(process)
    assert all(restarts(err, name) >= 1 for name in killed), err[-3000:]
    got = comparable(read_events(tmp_path / "events.db"), tmp_path)
    assert_same_events(got, clean_run)


@pytest.mark.parametrize("kind", STAGE_KINDS)
def test_each_stage_kind_killed_alone(
    kind: str,
    tmp_path: Path,
    assets: Path,
    clean_run: dict[str, dict[str, Any]],
) -> None:
    name = stage_name(kind, "north")
    process = spawn_run(chain_config(tmp_path, assets))
    try:
        wait_for_events(process, tmp_path / "events.db", 5)
        for _ in range(3):
            kill_stage(process, name)
            time.sleep(2.5)
        err = finish(process)
    finally:
        end_run(process)
    assert restarts(err, name) == 3, err[-3000:]
    got = comparable(read_events(tmp_path / "events.db"), tmp_path)
    assert_same_events(got, clean_run)


def metrics(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            text = reply.read().decode()
    except (OSError, urllib.error.URLError):
        return {}
    values = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        series, _, value = line.rpartition(" ")
        name, _, labels = series.partition("{")
        pairs = frozenset(
            tuple(p.split("=", 1)) for p in labels.rstrip("}").split(",") if "=" in p
        )
        values[name, frozenset((k, v.strip('"')) for k, v in pairs)] = float(value)
    return values


def test_crossing_in_flight_survives_track_then_sink_killed(
    tmp_path: Path, assets: Path, clean_run: dict[str, dict[str, Any]]
) -> None:
    """The sink is frozen (SIGSTOP) so that what track produces stays in flight;
    once track has counted a new line crossing, track is killed, and the frozen
    sink a moment later: the crossing is stored, once, as in the clean run."""
    port = free_port()
    config = chain_config(tmp_path, assets, http={"listen": f"127.0.0.1:{port}"})
    process = spawn_run(config)
    url = f"http://127.0.0.1:{port}/metrics"

    def crossings() -> float:
        return sum(
            value
            for (name, labels), value in metrics(url).items()
            if name == "framechain_rule_events_total"
            and ("camera", "north") in labels
            and ("rule", "mid") in labels
        )

    try:
        wait_for_events(process, tmp_path / "events.db", 5)
        sink = stage_pid("sink.sqlite", process.pid)
        assert sink is not None
        before = crossings()
        os.kill(sink, signal.SIGSTOP)
        wait_until(
            lambda: crossings() > before,
            20,
            "a new crossing",
            lambda: process.poll() is None,
        )
        in_flight = poll_store(
            tmp_path / "events.db",
            "SELECT COUNT(*) FROM events WHERE kind = 'line_crossing'",
        )
        kill_stage(process, "track.north")
        time.sleep(0.3)
        os.kill(sink, signal.SIGKILL)
        err = finish(process)
    finally:
        end_run(process)
    assert restarts(err, "track.north") == 1 and restarts(err, "sink.sqlite") == 1
    events = read_events(tmp_path / "events.db")
    got = comparable(events, tmp_path)
    crossings_stored = sum(e["kind"] == "line_crossing" for e in events)
    assert in_flight is not None and crossings_stored > in_flight
    assert_same_events(got, clean_run)


def supervisor_folder(pid: int) -> Path:
    """The temporary runtime folder a supervisor claimed."""
    for folder in Path(tempfile.gettempdir()).glob("framechain-*"):
        marker = folder / SUPERVISOR_PID_FILE
        if marker.is_file() and marker.read_text().strip() == str(pid):
            return folder
    raise AssertionError(f"no runtime folder for supervisor {pid}")


def test_power_cut_twice_then_run_again(
    tmp_path: Path, assets: Path, clean_run: dict[str, dict[str, Any]]
) -> None:
    """kill -9 of the whole process group (the supervisor too) twice during the
    clip, each time followed by a fresh ``framechain run``: the store holds
    exactly the clean run's events and passes SQLite's integrity check; the cut
    runs' rings and runtime folders are gone."""
    config = chain_config(tmp_path, assets)
    db = tmp_path / "events.db"
    left_behind = []
    for stored in (30, 90):
        process = spawn_run(config)
        try:
            wait_for_events(process, db, stored)
            wait_until(
                lambda: stage_pid("track.north", process.pid) is not None, 10, "track"
            )
            left_behind.append(supervisor_folder(process.pid))
        finally:
            end_run(process)  # SIGKILL to the group: supervisor and stages
    finish(spawn_run(config))
    with sqlite3.connect(db) as store:
        assert store.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert_same_events(comparable(read_events(db), tmp_path), clean_run)
    for folder in left_behind:
        assert not folder.exists()
        assert not list(shm_directory().glob(f"{ring_prefix(folder)}-*"))


def file_digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def rtsp(assets: Path) -> Iterator[RtspServer]:
    server = RtspServer(assets / "crowd.mp4")
    server.start()
    yield server
    server.kill()


def test_live_source_restarted_three_times(
    tmp_path: Path, rtsp: RtspServer, assets: Path
) -> None:
    """A live camera, the daemon stopped (SIGTERM) and started again three times:
    every run's events are stored under ids of their own (none collides with an
    earlier run's, so none is dropped as a duplicate) and no snapshot or video
    segment of an earlier run is overwritten."""
    media = tmp_path / "media"
    config = write_config(
        tmp_path / "live.yaml",
        {
            "door": {
                "source": {"kind": "rtsp", "url": rtsp.url},
                "rules": [CROWD_LINE, CROWD_LEFT_HALF],
                "snapshots": {"directory": str(media / "snapshots")},
                "annotate": {"video": str(media / "door.mp4")},
            }
        },
        detector={"model": "yolo11n.onnx", "imgsz": 320},
        supervisor=SUPERVISOR,
    )
    db = tmp_path / "events.db"
    earlier: dict[str, str] = {}
    received = []
    for run in range(4):
        stored = poll_store(db, "SELECT COUNT(*) FROM events") or 0
        process = spawn_run(config)
        try:
            wait_for_events(process, db, stored + 15)
            time.sleep(1)
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=60)
        finally:
            end_run(process)
        assert process.returncode == 0, err[-3000:]
        (line,) = [x for x in out.splitlines() if "sink sqlite:" in x]
        received.append(int(line.split("sink sqlite:")[1].split()[0]))
        now = file_digests(media)
        assert {k: now.get(k) for k in earlier} == earlier, f"run {run} overwrote"
        assert len(now) > len(earlier)
        earlier = now
    events = read_events(db)
    epochs: dict[str, int] = {}
    for event in events:
        seq = event["event_id"].rpartition(":")[2]
        epoch, _, frame = seq.partition("-")
        assert frame, f"a live event id without an epoch: {event['event_id']}"
        epochs[epoch] = epochs.get(epoch, 0) + 1
    # four runs, four epochs, and each run's every event is stored under its own
    assert sorted(epochs.values()) == sorted(received), (epochs, received)
    assert len(list(media.glob("door-*.mp4"))) == 4


def test_wedged_stage_is_restarted_and_not_ready_meanwhile(
    tmp_path: Path, assets: Path, clean_run: dict[str, dict[str, Any]]
) -> None:
    """track SIGSTOPped while frames wait for it: /readyz turns 503 within 3 s
    saying which stage holds the camera up, the supervisor restarts it within
    its heartbeat timeout (3 s here) plus a second, and nothing is lost."""
    port = free_port()
    supervisor = {**SUPERVISOR, "heartbeat_timeout_s": 3}
    config = chain_config(
        tmp_path, assets, http={"listen": f"127.0.0.1:{port}"}, supervisor=supervisor
    )
    process = spawn_run(config)

    def ready() -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/readyz", timeout=2
            ) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())
        except OSError:
            return 0, {}

    try:
        wait_for_events(process, tmp_path / "events.db", 5)
        wait_until(lambda: ready()[0] == 200, 30, "ready")
        wedged = stage_pid("track.north", process.pid)
        assert wedged is not None
        os.kill(wedged, signal.SIGSTOP)
        stopped_at = time.monotonic()
        wait_until(lambda: ready()[0] == 503, 3, "readyz 503")
        body = ready()[1]
        assert body["cameras"]["north"]["chain"].startswith("track.north")
        assert body["cameras"]["south"]["chain"] == "ok"
        wait_until(
            lambda: stage_pid("track.north", process.pid) not in (None, wedged),
            30,
            "the wedged track to be replaced",
        )
        assert time.monotonic() - stopped_at < 3 + 1 + 1.5  # timeout, tick, backoff
        wait_until(lambda: ready()[0] == 200, 30, "ready again")
        err = finish(process)
    finally:
        end_run(process)
    assert "stage track.north silent for" in err
    assert_same_events(
        comparable(read_events(tmp_path / "events.db"), tmp_path), clean_run
    )


def test_supervisor_giving_up_exits_non_zero_with_one_final_line(
    tmp_path: Path, assets: Path
) -> None:
    supervisor = {**SUPERVISOR, "max_restarts": 2}
    process = spawn_run(chain_config(tmp_path, assets, supervisor=supervisor))
    try:
        for _ in range(3):
            kill_stage(process, "detect")
            time.sleep(0.5)
        _, err = process.communicate(timeout=60)
    finally:
        end_run(process)
    assert process.returncode == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("framechain: stage detect failed 3 times"), last
    assert "killed by SIGKILL" in last and "max_restarts" in last
