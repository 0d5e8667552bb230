"""Event clips against real video: a clip of every line crossing, copied from the
camera's stream (never re-encoded), holding the very frame of the crossing (the
same pixels as the source's frame at the event's pts), cut at the source's
keyframes around pre_s and post_s; served over the API, with 404 and
Retry-After while the post-roll is recorded; and still made after the recorder
and the camera's capture are killed."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from functools import cache
from pathlib import Path
from typing import Any

import av
import pytest
import yaml
from conftest import (
    ASSETS,
    CROWD_LINE,
    chain_env,
    end_run,
    free_port,
    read_events,
    run_to_end,
    running_stage_pid,
    spawn_run,
    stage_pid,
    wait_until,
)

from stages.record.config import clip_path

PRE_S, POST_S = 2.0, 2.0
FPS = 24000 / 1001  # the clip's; frames are keyed by their index at this rate
SLACK_S = 0.25  # packets are windowed by capture time, frames by pts


@cache
def _source() -> tuple[dict[int, str], list[float], float]:
    """The clip's source decoded: frame digest by index, keyframe pts, end."""
    digests, keyframes = {}, []
    with av.open(str(ASSETS / "crowd.mp4")) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.is_keyframe and packet.pts is not None:
                keyframes.append(float(packet.pts * packet.time_base))
            for frame in packet.decode():
                digests[_index(frame.time)] = _digest(frame)
    return digests, sorted(keyframes), max(digests) / FPS


def _index(pts: float) -> int:
    return round(pts * FPS)


def _digest(frame: Any) -> str:
    return hashlib.md5(frame.to_ndarray(format="bgr24").tobytes()).hexdigest()


def _clip(path: Path) -> dict[int, str]:
    """Frame index -> digest of every frame of a clip."""
    with av.open(str(path)) as container:
        return {
            _index(f.time): _digest(f)
            for f in container.decode(container.streams.video[0])
        }


def _config(tmp: Path, **source: Any) -> Path:
    config = {
        "models_dir": str(ASSETS),
        "cameras": {
            "east": {
                "source": {
                    "kind": "file",
                    "path": str(ASSETS / "crowd.mp4"),
                    "live": True,
                    **source,
                },
                "rules": [CROWD_LINE],
                "clips": {
                    "directory": str(tmp / "clips"),
                    "pre_s": PRE_S,
                    "post_s": POST_S,
                },
            }
        },
        "detector": {"model": "yolo11n.onnx", "imgsz": 320},
        "sinks": [{"kind": "sqlite", "path": str(tmp / "events.db")}],
        "state_dir": str(tmp / "state"),
    }
    path = tmp / "clips.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.slow
def test_each_crossing_has_a_clip_with_its_frame_cut_at_keyframes(
    tmp_path: Path,
) -> None:
    stdout, _ = run_to_end(_config(tmp_path), chain_env())
    crossings = [e for e in read_events(tmp_path / "events.db")]
    crossings = [e for e in crossings if e["kind"] == "line_crossing"]
    assert len(crossings) >= 10
    assert f"clips: {len(crossings)} written" in stdout
    digests, keyframes, end = _source()
    for event in crossings:
        path = clip_path(tmp_path / "clips", "east", event["event_id"])
        frames = _clip(path)
        at = _index(event["pts"])
        # the crossing's own frame, the very pixels of the source's
        assert frames.get(at) == digests[at], event["event_id"]
        assert set(frames) <= set(digests)  # copied, never re-timed
        first, last = min(frames) / FPS, max(frames) / FPS
        # it starts at the source's last keyframe before the pre-roll ...
        starts = [k for k in keyframes if abs(k - first) < 0.5 / FPS]
        assert starts, first
        before = [k for k in keyframes if k <= event["pts"] - PRE_S + SLACK_S]
        assert starts[0] == (before[-1] if before else keyframes[0])
        if starts[0] == keyframes[0]:
            # from the IDR frame every frame decodes to the source's pixels (the
            # clip's second keyframe is an I-frame that later frames reach
            # past, which any decoder starting there conceals)
            assert all(digests[pts] == d for pts, d in frames.items())
        # ... and ends with the post-roll, or with the file
        assert last <= event["pts"] + POST_S + SLACK_S
        assert last >= min(event["pts"] + POST_S - SLACK_S, end - 0.1)
        # so its length is pre_s + post_s within one GOP
        gop = max(b - a for a, b in zip(keyframes, [*keyframes[1:], end]))
        if event["pts"] - PRE_S > keyframes[0] and event["pts"] + POST_S < end:
            assert PRE_S + POST_S - 2 * SLACK_S <= last - first
            assert last - first <= PRE_S + POST_S + gop


def _get(port: int, path: str) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            return response.status, response.read(), headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), {k.lower(): v for k, v in e.headers.items()}
    except (urllib.error.URLError, OSError):
        return 0, b"", {}


def _crossings(db: Path) -> list[dict[str, Any]]:
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        connection.row_factory = sqlite3.Row
        try:
            rows = connection.execute(
                "SELECT * FROM events WHERE kind = 'line_crossing' ORDER BY rowid"
            ).fetchall()
        except sqlite3.OperationalError:
            return []
    return [dict(r) for r in rows]


@pytest.mark.slow
def test_clips_are_served_and_survive_restarts_of_the_recorder_and_capture(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = _config(tmp_path, loop=True)
    document = yaml.safe_load(config.read_text())
    document["http"] = {"listen": f"127.0.0.1:{port}", "api": True}
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    db = tmp_path / "events.db"
    run = spawn_run(config, chain_env())
    alive = lambda: run.poll() is None  # noqa: E731
    try:
        wait_until(lambda: len(_crossings(db)) >= 1, 120, "a crossing", alive=alive)
        fresh = _crossings(db)[-1]
        quoted = urllib.parse.quote(fresh["event_id"], safe=":")
        assert fresh["clip_url"] == (
            f"http://127.0.0.1:{port}/api/events/{quoted}/clip.mp4"
        )
        status, body, headers = _get(port, f"/api/events/{fresh['event_id']}/clip.mp4")
        if status == 404:  # its post-roll is still being recorded
            assert b"being recorded" in body, body
            assert 1 <= int(headers["retry-after"]) <= POST_S + 2
        path = clip_path(tmp_path / "clips", "east", fresh["event_id"])
        wait_until(path.exists, 30, "the first clip", alive=alive)
        status, body, headers = _get(port, f"/api/events/{fresh['event_id']}/clip.mp4")
        assert status == 200 and headers["content-type"] == "video/mp4"
        assert body == path.read_bytes()

        # the recorder, then the camera's capture, killed outright
        for stage in ("record", "capture.east"):
            os.kill(running_stage_pid(stage, run.pid), signal.SIGKILL)
            wait_until(
                lambda: stage_pid(stage, run.pid) is not None,
                30,
                f"{stage} restarted",
                alive=alive,
            )
            time.sleep(3)
        restarted = len(_crossings(db))
        wait_until(
            lambda: len(_crossings(db)) >= restarted + 4,
            120,
            "crossings after the restarts",
            alive=alive,
        )
        time.sleep(POST_S + 3)
        events = _crossings(db)
        clips = {
            e["event_id"]
            for e in events
            if clip_path(tmp_path / "clips", "east", e["event_id"]).exists()
        }
        # every crossing before the kills, and every one since the restarts
        # settled whose post-roll is over, has its clip; a crossing in between
        # may have lost its video
        settled = time.time() - POST_S - 2
        missing = [
            (e["event_id"], round(time.time() - e["capture_ts"], 1))
            for e in events[restarted:]
            if e["event_id"] not in clips and e["capture_ts"] < settled
        ]
        assert events[0]["event_id"] in clips
        assert len(events[restarted:]) >= 4 and not missing, missing
        for event_id in sorted(clips)[:5]:
            _clip(clip_path(tmp_path / "clips", "east", event_id))  # decodes
        state = json.loads((tmp_path / "state" / "clips" / "record.json").read_text())
        assert state["after"] > 0
        run.send_signal(signal.SIGTERM)
        run.communicate(timeout=120)
    finally:
        end_run(run)
