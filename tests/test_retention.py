"""Retention while events keep arriving: a run on a looping clip with tiny size
limits keeps the event store, the snapshots and the annotated video segments
under them, and says what it pruned."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import yaml
from conftest import ASSETS, CROWD_LINE, end_run, read_events, spawn_run
from conftest import CROWD_LEFT_HALF as ZONE

pytestmark = pytest.mark.slow

STORE_MB, SNAPSHOTS_MB, VIDEO_MB = 0.25, 0.1, 0.6
RUN_S = 40.0


def _bytes(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            pass  # pruned between the listing and the stat
    return total


def test_tiny_limits_hold_while_events_arrive(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    snapshots, video = tmp_path / "snapshots", tmp_path / "video"
    config = {
        "models_dir": str(ASSETS),
        "cameras": {
            "crowd": {
                "source": {
                    "kind": "file",
                    "path": str(ASSETS / "crowd.mp4"),
                    "loop": True,
                    "realtime": True,
                },
                "rules": [CROWD_LINE, ZONE],
                "snapshots": {
                    "directory": str(snapshots),
                    "retention": {"max_size_mb": SNAPSHOTS_MB},
                },
                "annotate": {
                    "video": str(video / "crowd.mp4"),
                    "segment_s": 1,
                    "retention": {"max_size_mb": VIDEO_MB},
                },
            }
        },
        "detector": {"model": "yolo11n.onnx", "imgsz": 320},
        "sinks": [
            {"kind": "sqlite", "path": str(db), "retention": {"max_size_mb": STORE_MB}}
        ],
    }
    path = tmp_path / "retention.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    process = spawn_run(path)
    samples: list[tuple[int, int, int, int]] = []  # store, snapshots, video, largest
    try:
        started = time.monotonic()
        while time.monotonic() - started < RUN_S:
            assert process.poll() is None, process.communicate()
            segments = sorted(video.glob("crowd-*.mp4"))
            samples.append(
                (
                    _bytes([db, db.with_name("events.db-wal")]),
                    _bytes(list(snapshots.rglob("*.jpg"))),
                    _bytes(segments),
                    max((_bytes([s]) for s in segments), default=0),
                )
            )
            time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        end_run(process)
    assert process.returncode == 0, stderr[-3000:]
    store = [s[0] for s in samples]
    assert max(store) <= STORE_MB * 1e6 * 1.25, store
    assert max(s[1] for s in samples) <= SNAPSHOTS_MB * 1e6 * 1.25
    # the segment being written is never deleted: the limit plus that one
    assert max(s[2] - s[3] for s in samples) <= VIDEO_MB * 1e6
    events = read_events(db)
    assert events, "no events kept"
    # pruning happened (the limits were reached), and events kept coming to the
    # end: the newest kept is from the last seconds of the run
    assert "pruned" in stdout, stdout
    assert max(e["capture_ts"] for e in events) > time.time() - 20
    assert len(list(video.glob("crowd-*.mp4"))) < RUN_S  # 1 s segments were pruned


def test_full_disk_holds_events_and_answers_no_mark(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite's own "database or disk is full" (a page limit on the sink's real
    connection): the sink does not crash, logs one line, reports the state, answers
    no mark while events are held, and stores every one of them once there is
    room; nothing stored before is lost."""
    from pipeline.messages import Event, Mark
    from pipeline.stage import Received
    from stages.sinks.sqlite import SqliteSink, SqliteSinkConfig

    def events(first: int, count: int) -> list[Received]:
        return [
            Received(
                "events",
                Event(
                    f"cam:r:counts:-1:{i}",
                    "cam",
                    "r",
                    "counts",
                    i,
                    0.0,
                    time.time(),
                    data={"pad": "x" * 2000},
                ),
                [],
            )
            for i in range(first, first + count)
        ]

    db = tmp_path / "full.db"
    sink = SqliteSink(SqliteSinkConfig(kind="sqlite", path=str(db)), ["cam"])
    sink.setup()
    assert sink.process(events(0, 10)) == []
    assert sink._db is not None
    pages = sink._db.execute("PRAGMA page_count").fetchone()[0]
    sink._db.execute(f"PRAGMA max_page_count = {pages + 2}")  # the disk is full
    mark = Received("events", Mark("cam", 1, 7), [])
    answers = []
    for batch in range(5):
        answers += sink.process([*events(10 + 50 * batch, 50), mark])
    assert answers == [] and sink.holding()
    assert sink.stats().held == 250 and "disk full" in sink.stats().problem
    assert sum("disk is full" in r.getMessage() for r in caplog.records) == 1
    sink._db.execute("PRAGMA max_page_count = 1000000")  # room again
    answered = sink.process([mark])
    assert len(answered) == 1 and not sink.holding() and not sink.stats().problem
    sink.close()
    stored = read_events(db)
    assert sorted(e["seq"] for e in stored) == list(range(260))


@pytest.mark.parametrize("old_file", [False, True])
def test_spool_shrinks_oldest_first(tmp_path: Path, old_file: bool) -> None:
    """spool_max_mb: the spool of a sink that stays away is brought under the
    limit, delivered ids first, then the oldest undelivered events; the newest stay
    in order. ``old_file``: a spool made without incremental vacuum (an earlier
    version) shrinks too, rather than losing every event to a file that cannot."""
    import sqlite3

    from pipeline.messages import Event
    from stages.sinks.spool import DiskSpool

    path = tmp_path / "away.db"
    if old_file:
        with sqlite3.connect(path) as db:
            db.execute("PRAGMA auto_vacuum=NONE")
            db.execute("CREATE TABLE earlier (x)")
    spool = DiskSpool(path)
    pad = {"pad": "x" * 1000}
    events = [
        Event(f"cam:r:counts:-1:{i}", "cam", "r", "counts", i, 0.0, 0.0, data=pad)
        for i in range(2000)
    ]
    spool.append(events[:100])
    spool.delivered(spool.peek(100))
    spool.append(events[100:])
    limit = 500_000
    dropped = spool.shrink(limit)
    assert path.stat().st_size <= limit
    assert 0 < dropped < 1900 and len(spool) == 1900 - dropped
    kept = [e.seq for _, e in spool.peek(2000)]
    assert kept == list(range(2000 - len(kept), 2000))  # the newest, in order
    spool.close()
