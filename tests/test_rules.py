"""Rules as pure functions: table-driven cases for line crossing and zone occupancy."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest
from pydantic import ValidationError

from pipeline.detections import Detections
from stages.rules import LineCounter, LineRuleConfig, ZoneCounter, points_in_polygon

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


def test_supervision_round_trip() -> None:
    from pipeline.convert import from_supervision, to_supervision

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
    from stages.detect import CameraDetectConfig, _CameraFilter

    detections = Detections(
        np.zeros((3, 4), np.float32),
        np.array([0.9, 0.45, 0.3], np.float32),
        np.array([0, 2, 0], np.int32),
    )
    names = ["person", "bicycle", "car"]
    camera = _CameraFilter(CameraDetectConfig(**config), names, base=0.25)
    result = camera.apply(detections)
    expected = detections[np.array(kept, int)] if kept else Detections.empty()
    assert result.confidence.tolist() == expected.confidence.tolist()
