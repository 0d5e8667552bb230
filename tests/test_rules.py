"""Rules as pure functions: table-driven cases for line crossing and zone occupancy."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import msgspec
import numpy as np
import pytest
from pydantic import ValidationError

from pipeline.detections import Detections
from stages.track.rules.base import points_in_polygon
from stages.track.rules.line import LineCounter, LineRuleConfig
from stages.track.rules.zone import ZoneCounter

LINE = (np.array([0.0, 100.0]), np.array([200.0, 100.0]))


def run_line(path: list[tuple[float, float]], confirm: int = 1) -> list[str]:
    counter = LineCounter(LINE[0], LINE[1], 2.0, confirm)
    directions = []
    for t, point in enumerate(path):
        crossings = counter.update(
            np.array([point], np.float32),
            np.array([7]),
            np.array([0], np.int32),
            now=float(t),
        )
        directions += [c.direction for c in crossings]
    return directions


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ([(50, 50), (50, 150)], ["in"]),  # downwards across: in
        ([(50, 150), (50, 50)], ["out"]),  # upwards across: out
        ([(50, 50), (50, 150), (50, 50)], ["in", "out"]),  # there and back
        ([(250, 50), (250, 150)], []),  # beyond the segment's end
        ([(-10, 50), (-10, 150)], []),  # before its start
        (
            [(50, 50), (50, 99), (50, 101), (50, 99), (50, 150)],
            ["in"],
        ),  # jitter in the band
        ([(50, 50), (50, 100), (50, 100), (50, 150)], ["in"]),  # pause on the line
        ([(150, 50), (210, 150)], ["in"]),  # diagonal, meets at x=180
        ([(190, 50), (250, 150)], []),  # diagonal, meets at x=220
        ([(50, 90), (50, 95)], []),  # approaches, never crosses
    ],
)
def test_line_crossing(path, expected) -> None:
    assert run_line(path) == expected


@pytest.mark.parametrize(
    ("path", "confirm", "expected"),
    [
        (
            [(50, 50), (50, 110), (50, 90), (50, 110), (50, 90), (50, 110)],
            3,
            [],
        ),  # wobble
        ([(50, 50), (50, 110), (50, 120), (50, 130)], 3, ["in"]),  # stays over: counted
        ([(50, 50), (50, 110), (50, 120), (50, 130), (50, 90), (50, 80)], 3, ["in"]),
        ([(50, 50), (50, 110), (50, 90), (50, 110)], 1, ["in", "out", "in"]),
    ],
)
def test_line_crossing_debounce(path, confirm, expected) -> None:
    """A wobbling anchor counts once it has stayed over for ``confirm_frames``
    (pins the crowd over-counting seen with a 2 px band alone)."""
    assert run_line(path, confirm) == expected


def test_line_counts_each_track_separately() -> None:
    """Two tracks crossing in the same frame give two crossings with their own ids."""
    counter = LineCounter(LINE[0], LINE[1], 2.0, 1)
    ids = np.array([1, 2])
    classes = np.array([0, 2], np.int32)
    counter.update(np.array([[10, 50], [20, 150]], np.float32), ids, classes, now=0.0)
    crossings = counter.update(
        np.array([[10, 150], [20, 50]], np.float32), ids, classes, 1.0
    )
    assert {(c.track_id, c.class_id, c.direction) for c in crossings} == {
        (1, 0, "in"),
        (2, 2, "out"),
    }


def test_forgotten_tracks_are_dropped() -> None:
    counter = LineCounter(LINE[0], LINE[1], 2.0, 1)
    counter.update(
        np.array([[10, 50]], np.float32), np.array([1]), np.array([0], np.int32), 0.0
    )
    counter.forget(older_than=5.0)
    assert counter.tracks == {}


SQUARE = np.array([[0, 0], [100, 0], [100, 100], [0, 100]], np.float64)


@pytest.mark.parametrize(
    ("points", "inside"),
    [
        ([(50, 50)], [True]),
        ([(150, 50)], [False]),
        ([(50, 50), (-1, 50), (99, 99)], [True, False, True]),
        ([], []),
    ],
)
def test_points_in_polygon(points, inside) -> None:
    got = points_in_polygon(np.array(points, np.float32).reshape(-1, 2), SQUARE)
    assert got.tolist() == inside


def test_zone_reports_changes_only() -> None:
    zone = ZoneCounter(SQUARE)
    one_in = np.array([[50, 50], [150, 50]], np.float32)
    assert zone.update(one_in, np.array([0, 0], np.int32)) == {0: 1}
    assert zone.update(one_in, np.array([0, 0], np.int32)) is None
    assert zone.update(
        np.array([[50, 50], [60, 60]], np.float32), np.array([0, 2], np.int32)
    ) == {0: 1, 2: 1}


@pytest.mark.parametrize(
    ("start", "end", "raises"),
    [
        ((0, 0), (10, 0), nullcontext()),
        ((5, 5), (5, 5), pytest.raises(ValidationError, match="same point")),
    ],
)
def test_line_config(start, end, raises) -> None:
    with raises:
        LineRuleConfig(kind="line", name="l", start=start, end=end)


def test_detections_validate_and_select() -> None:
    detections = Detections(
        np.zeros((3, 4), np.float32),
        np.array([0.9, 0.5, 0.2], np.float32),
        np.array([0, 1, 0], np.int32),
    )
    assert len(detections[detections.confidence > 0.4]) == 2
    assert len(detections[1]) == 1
    assert len(Detections.merge([detections, Detections.empty(), detections])) == 6
    with pytest.raises(ValueError, match=r"expected shape \(2,\)"):
        Detections(
            np.zeros((2, 4), np.float32), np.zeros(3, np.float32), np.zeros(2, np.int32)
        )
    parts = detections.to_parts()
    assert (
        Detections.from_parts(3, parts).confidence.tolist()
        == detections.confidence.tolist()
    )


def from_supervision(detections: Any) -> Detections:
    """supervision's Detections back to ours (only this round trip needs it)."""
    n = len(detections)
    return Detections(
        xyxy=np.asarray(detections.xyxy, np.float32).reshape(n, 4),
        confidence=np.asarray(detections.confidence, np.float32),
        class_id=np.asarray(detections.class_id, np.int32),
        tracker_id=(
            None
            if detections.tracker_id is None
            else np.asarray(detections.tracker_id, np.int64)
        ),
        data={k: np.asarray(v) for k, v in detections.data.items()},
    )


def test_supervision_round_trip() -> None:
    from pipeline.convert import to_supervision

    detections = Detections(
        np.array([[1, 2, 3, 4]], np.float32),
        np.array([0.5], np.float32),
        np.array([2], np.int32),
        tracker_id=np.array([9]),
    )
    back = from_supervision(to_supervision(detections))
    assert back.xyxy.tolist() == detections.xyxy.tolist()
    assert back.tracker_id.tolist() == [9]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rtsp://admin:secret@10.0.0.2/live", "rtsp://***@10.0.0.2/live"),
        ("rtsp://u:p@ss:w@rd@cam:554/a", "rtsp://***@cam:554/a"),
        (
            "http://cam/snap?user=admin&password=hunter2",
            "http://cam/snap?user=***&password=***",
        ),
        ("file:///videos/a.mp4", "file:///videos/a.mp4"),
    ],
)
def test_redact(text, expected) -> None:
    from pipeline.log import redact

    assert redact(text) == expected


@pytest.mark.parametrize(
    ("config", "kept"),
    [
        ({}, [0, 1, 2]),
        ({"classes": ["person"]}, [0, 2]),
        ({"confidence": 0.6}, [0]),
        ({"confidence": {"car": 0.3}}, [0, 1, 2]),
        ({"confidence": {"person": 0.5}}, [0, 1]),
        ({"classes": ["car"], "confidence": {"car": 0.5}}, []),
    ],
)
def test_camera_class_filter_and_thresholds(config, kept) -> None:
    """Per-camera class filters and per-class confidence thresholds."""
    from stages.detect.config import CameraDetectConfig, CameraFilter

    detections = Detections(
        np.zeros((3, 4), np.float32),
        np.array([0.9, 0.45, 0.3], np.float32),
        np.array([0, 2, 0], np.int32),
    )
    names = ["person", "bicycle", "car"]
    camera = CameraFilter(CameraDetectConfig(**config), names, base=0.25)
    result = camera.apply(detections)
    expected = detections[np.array(kept, int)] if kept else Detections.empty()
    assert result.confidence.tolist() == expected.confidence.tolist()


def run_zone(path: list[tuple[float, float] | None], confirm: int = 2, loiter=None):
    """Feed one track along ``path`` (None: not detected that frame) at 1 frame/s."""
    from stages.track.rules.zone import ZoneVisits

    zone = ZoneVisits(SQUARE, confirm, loiter, lost_after_s=2.0)
    out = []
    for t, point in enumerate(path):
        anchors = np.array([point] if point else [], np.float32).reshape(-1, 2)
        ids = np.array([5] if point else [], np.int64)
        classes = np.array([0] if point else [], np.int32)
        out += [
            (v.kind, v.at, v.dwell_s, v.reason)
            for v in zone.update(anchors, ids, classes, float(t))
        ]
    return out


@pytest.mark.parametrize(
    ("path", "confirm", "expected"),
    [
        # in at t=1, out at t=4: enter dated t=1, exit dated t=4 with 3 s dwell
        (
            [(150, 50), (50, 50), (50, 50), (50, 50), (150, 50), (150, 50)],
            2,
            [("zone_enter", 1.0, 0.0, ""), ("zone_exit", 4.0, 3.0, "left")],
        ),
        # one frame inside is jitter at confirm 2, an entry at confirm 1
        ([(150, 50), (99, 50), (101, 50), (150, 50)], 2, []),
        (
            [(150, 50), (99, 50), (101, 50)],
            1,
            [("zone_enter", 1.0, 0.0, ""), ("zone_exit", 2.0, 1.0, "left")],
        ),
        # the tracker loses it inside: exit dated when last seen, reason lost
        (
            [(150, 50), (50, 50), (50, 50), None, None, None, None],
            2,
            [("zone_enter", 1.0, 0.0, ""), ("zone_exit", 2.0, 1.0, "lost")],
        ),
    ],
)
def test_zone_visits(path, confirm, expected) -> None:
    assert run_zone(path, confirm) == expected


def test_loitering_is_reported_once_per_visit() -> None:
    inside = [(50, 50)] * 8
    visits = run_zone([(150, 50), *inside, (150, 50), (150, 50), *inside], 2, 3.0)
    loiters = [v for v in visits if v[0] == "loitering"]
    assert [(at, dwell) for _, at, dwell, _ in loiters] == [(4.0, 3.0), (14.0, 3.0)]


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        # 3 frames at >= 3 starts it (dated t=1); 2 below ends it (dated t=6)
        (
            [0, 3, 3, 3, 4, 3, 1, 1, 1],
            [("crowd_start", 1.0, 3, 3), ("crowd_end", 6.0, 1, 4)],
        ),
        # hovering at the threshold: 3, 2, 3, 2 never lasts 2 s either way
        ([3, 2, 3, 2, 3, 2, 3, 2], []),
        # once started, dips to 2 (>= clear_below 2) never end it: hysteresis
        ([3, 3, 3, 2, 2, 2, 2, 3, 2, 2], [("crowd_start", 0.0, 3, 3)]),
    ],
)
def test_crowd_hysteresis(counts, expected) -> None:
    from stages.track.rules.crowd import CrowdMonitor

    crowd = CrowdMonitor(
        None, threshold=3, min_duration_s=2.0, clear_below=2, clear_duration_s=2.0
    )
    changes = []
    for t, n in enumerate(counts):
        change = crowd.update(np.zeros((n, 2), np.float32), float(t))
        if change is not None:
            changes.append((change.kind, change.at, change.count, change.peak))
    assert changes == expected


def test_interval_counts_align_to_the_interval() -> None:
    from stages.track.aggregate import IntervalCounts

    counts = IntervalCounts(10.0)
    assert counts.roll(3.0) is None
    counts.add_crossing("door", "in", "person")
    counts.add_occupancy("hall", 2)
    counts.add_occupancy("hall", 4)
    report = counts.roll(12.5)
    assert msgspec.to_builtins(report) == {
        "start": 0.0,
        "end": 10.0,
        "partial": False,
        "lines": {"door": {"in": {"person": 1}}},
        "zones": {"hall": {"max": 4, "mean": 3.0}},
    }
    assert counts.roll(15.0) is None
    last = counts.report(partial=True)
    assert last is not None and last.start == 10.0


def test_spool_is_ordered_durable_and_remembers_deliveries(tmp_path) -> None:
    from pipeline.messages import Event
    from stages.sinks.spool import DiskSpool

    def event(i: int) -> Event:
        return Event(f"cam:r:counts:-1:{i}", "cam", "r", "counts", i, 0.0, 0.0)

    spool = DiskSpool(tmp_path / "s.db")
    assert spool.append([event(i) for i in range(5)]) == 5
    assert spool.append([event(3)]) == 0  # already spooled
    first = spool.peek(2)
    assert [e.seq for _, e in first] == [0, 1]
    spool.delivered(first)
    spool.close()
    spool = DiskSpool(tmp_path / "s.db")  # as after a restart
    assert len(spool) == 3
    assert spool.append([event(0)]) == 0  # delivered before: not again
    assert [e.seq for _, e in spool.peek(10)] == [2, 3, 4]
    spool.dead(spool.peek(1), "HTTP 400")
    assert [e.seq for _, e in spool.peek(10)] == [3, 4]
