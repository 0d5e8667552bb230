"""Our vectorised ByteTrack: what a camera's tracks do (ids, gaps, low-confidence
boxes), and the same ids and filter states as the ``trackers`` package on a dense
scene with crossings, misses and clutter."""

from __future__ import annotations

import numpy as np
import pytest
from tracking import Boxes, assert_same_tracks

from stages.track.bytetrack import ByteTrack, lost_frames_budget
from stages.track.config import TrackerConfig


def tracker(**overrides: float) -> ByteTrack:
    settings = {
        "max_lost_frames": 10,
        "activation_threshold": 0.25,
        "high_confidence": 0.5,
        "min_consecutive_frames": 2,
        "match_iou": 0.1,
    }
    return ByteTrack(**{**settings, **overrides})  # type: ignore[arg-type]


def box(x: float, y: float = 100.0) -> np.ndarray:
    return np.array([[x, y, x + 40, y + 80]], np.float32)


def conf(value: float) -> np.ndarray:
    return np.array([value], np.float32)


def ids_over(track: ByteTrack, frames: list[tuple[np.ndarray, np.ndarray]]) -> list:
    return [track.update(xyxy, confidence)[1].tolist() for xyxy, confidence in frames]


def test_an_object_gets_an_id_on_its_second_frame_and_keeps_it() -> None:
    track = tracker()
    got = ids_over(track, [(box(10 + 6 * i), conf(0.9)) for i in range(30)])
    assert got == [[]] + [[0]] * 29


def test_a_gap_within_the_budget_keeps_the_id_and_a_longer_one_does_not() -> None:
    """The filter carries the object through a gap at its velocity: back within
    ``max_lost_frames`` frames it keeps its id; later it is a new object."""
    empty = (np.empty((0, 4), np.float32), np.empty(0, np.float32))
    for gap, expected in ((10, 0), (11, 1)):
        track = tracker(max_lost_frames=10)
        seen = [(box(10 + 6 * i), conf(0.9)) for i in range(10)]
        after = [(box(10 + 6 * i), conf(0.9)) for i in range(10 + gap, 14 + gap)]
        got = ids_over(track, [*seen, *[empty] * gap, *after])
        assert got[10 : 10 + gap] == [[]] * gap
        assert got[-1] == [expected], (gap, got[-4:])


def test_low_confidence_boxes_continue_a_track_but_never_start_one() -> None:
    track = tracker()
    got = ids_over(track, [(box(10 + 6 * i), conf(0.3)) for i in range(5)])
    assert got == [[]] * 5 and len(track) == 0
    got = ids_over(
        track,
        [(box(10 + 6 * i), conf(0.9 if i < 3 else 0.3)) for i in range(10)],
    )
    assert got == [[]] + [[0]] * 9


def test_two_objects_crossing_keep_their_ids() -> None:
    """Two people walking through each other: the motion model keeps them apart."""
    track = tracker()
    frames = []
    for i in range(40):
        xyxy = np.concatenate([box(0 + 8 * i), box(320 - 8 * i, 110)])
        frames.append((xyxy, np.array([0.9, 0.8], np.float32)))
    got = ids_over(track, frames)
    assert got[1] == [0, 1] and all(ids == [0, 1] for ids in got[1:])


def test_lost_budget_is_seconds_at_the_stream_rate() -> None:
    assert lost_frames_budget(1.0, 30.0) == 30
    assert lost_frames_budget(1.0, 15.0) == 15
    assert lost_frames_budget(2.0, 23.976) == 48
    assert lost_frames_budget(0.01, 30.0) == 1


def dense_scene(seed: int, frames: int = 240, objects: int = 70) -> list[Boxes]:
    """People-sized boxes on straight paths with jitter, some fast, some crossing,
    misses (10 %), confidences from 0.1 to 0.95 and low-confidence clutter, in a
    shuffled order each frame as a detector gives them."""
    rng = np.random.default_rng(seed)
    born = rng.integers(0, frames - 20, objects)
    lives = rng.integers(10, 150, objects)
    start = rng.uniform([0, 0], [1200, 600], (objects, 2))
    velocity = rng.normal(0, 4, (objects, 2)) * rng.choice([1, 3], (objects, 1))
    size = rng.uniform([20, 40], [60, 140], (objects, 2))
    level = rng.uniform(0.15, 0.95, objects)
    scene = []
    for frame in range(frames):
        alive = (born <= frame) & (frame < born + lives) & (rng.random(objects) > 0.1)
        age = (frame - born[alive])[:, None]
        corner = (
            start[alive] + velocity[alive] * age + rng.normal(0, 1.5, (alive.sum(), 2))
        )
        xyxy = np.hstack([corner, corner + size[alive]])
        confidence = np.clip(level[alive] + rng.normal(0, 0.08, alive.sum()), 0.1, 1)
        clutter = rng.integers(0, 4)
        corner = rng.uniform([0, 0], [1200, 600], (clutter, 2))
        xyxy = np.vstack([xyxy, np.hstack([corner, corner + 30])])
        confidence = np.concatenate([confidence, rng.uniform(0.1, 0.35, clutter)])
        order = rng.permutation(len(xyxy))
        scene.append(
            (xyxy[order].astype(np.float32), confidence[order].astype(np.float32))
        )
    return scene


@pytest.mark.parametrize(
    ("seed", "settings"),
    [
        (1, {}),
        (2, {"min_consecutive_frames": 1, "lost_track_s": 0.3}),
        (3, {"min_consecutive_frames": 3, "match_iou": 0.3, "high_confidence": 0.6}),
    ],
)
def test_same_ids_and_states_as_the_trackers_package(seed: int, settings: dict) -> None:
    compared = assert_same_tracks(dense_scene(seed), 25.0, TrackerConfig(**settings))
    assert compared > 2000  # dozens of tracks confirmed at a time
