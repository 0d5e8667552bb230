"""The API's pictures against a real chain: a looped file camera played as live,
its annotated live picture asked as latest.jpg and watched as stream.mjpeg over
real HTTP (drawn at the preview's size and rate, only while watched, a bounded
number of streams per client), and each event's snapshot served by URL, never a
file from outside the camera's snapshot folder."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import signal
import sqlite3
import time
import urllib.parse
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml
from conftest import (
    ASSETS,
    CROWD_LEFT_HALF,
    CROWD_LINE,
    chain_env,
    end_run,
    free_port,
    spawn_run,
    wait_until,
)

from pipeline.demand import HOLD_S

WIDTH, FPS = 320, 4.0  # the preview's; the clip is 800 x 450
LINE_BGR = np.array([0, 215, 255])  # stages.annotate.drawing.LINE_COLOUR
FORGED = "east:mid:line_crossing:1:999999999"


def _config(tmp: Path, port: int) -> Path:
    config = {
        "models_dir": str(ASSETS),
        "cameras": {
            "east": {
                "source": {
                    "kind": "file",
                    "path": str(ASSETS / "crowd.mp4"),
                    "live": True,
                    "loop": True,
                },
                "rules": [CROWD_LINE, CROWD_LEFT_HALF],
                "snapshots": {"directory": str(tmp / "snapshots")},
            }
        },
        "detector": {"model": "yolo11n.onnx", "imgsz": 320},
        "sinks": [{"kind": "sqlite", "path": str(tmp / "events.db")}],
        "http": {
            "listen": f"127.0.0.1:{port}",
            "api": True,
            "preview": {"width": WIDTH, "fps": FPS, "streams_per_client": 2},
        },
    }
    path = tmp / "pictures.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _get(port: int, path: str) -> tuple[int, bytes, dict[str, str]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    except OSError:
        return 0, b"", {}
    finally:
        connection.close()


def _metric(port: int, name: str) -> float:
    status, body, _ = _get(port, "/metrics")
    assert status == 200
    found = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", body.decode(), re.M)
    assert found, name
    return float(found.group(1))


def _picture(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a JPEG"
    return image


class _Stream:
    """One stream.mjpeg answer, read part by part."""

    def __init__(self, port: int, camera: str = "east") -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        self.connection.request("GET", f"/api/cameras/{camera}/stream.mjpeg")
        self.response = self.connection.getresponse()
        self.status = self.response.status

    def pictures(self, seconds: float) -> list[bytes]:
        found, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            boundary = self.response.readline()
            if not boundary.strip():
                continue
            assert boundary.strip() == b"--framechainframe", boundary
            headers = {}
            while line := self.response.readline().strip():
                key, _, value = line.decode().partition(":")
                headers[key.lower()] = value.strip()
            assert headers["content-type"] == "image/jpeg"
            found.append(self.response.read(int(headers["content-length"])))
        return found

    def close(self) -> None:
        self.connection.close()


@pytest.mark.slow
def test_live_pictures_are_drawn_only_while_watched(tmp_path: Path) -> None:
    port = free_port()
    run = spawn_run(_config(tmp_path, port), chain_env())
    streams: list[_Stream] = []
    try:

        def tracked() -> bool:
            status, body, _ = _get(port, "/api/cameras/east")
            return status == 200 and json.loads(body)["fps_out"] > 0

        wait_until(tracked, 120, "frames tracked", alive=lambda: run.poll() is None)
        time.sleep(2 * HOLD_S)
        # nobody has watched: nothing was copied, nothing drawn
        assert _metric(port, "framechain_previews_total") == 0
        assert _metric(port, "framechain_api_pictures_drawn_total") == 0

        status, jpeg, headers = _get(port, "/api/cameras/east/latest.jpg")
        assert status == 200, jpeg
        assert headers["content-type"] == "image/jpeg"
        picture = _picture(jpeg)
        assert picture.shape == (180, WIDTH, 3)
        # the counting line, scaled to the picture: y = 300 * 0.4, drawn yellow
        row = picture[118:123, 8 : WIDTH - 8].reshape(-1, 3).astype(int)
        yellow = np.abs(row - LINE_BGR).max(axis=1) < 60
        assert yellow.mean() > 0.3, "the line is not on the picture"
        assert _get(port, "/api/cameras/north/latest.jpg")[0] == 404

        stream = _Stream(port)
        streams.append(stream)
        assert stream.status == 200
        assert stream.response.getheader("content-type", "").startswith(
            "multipart/x-mixed-replace"
        )
        stream.pictures(1.0)  # the demand reaches the track stage
        seen = stream.pictures(4.0)
        # at the preview's rate, not the camera's 24 fps
        assert FPS * 4 * 0.5 <= len(seen) <= FPS * 4 + 2, len(seen)
        assert all(_picture(j).shape[1] == WIDTH for j in seen)

        # two streams per client; a third is refused until one closes
        streams.append(_Stream(port))
        assert streams[-1].status == 200
        third = _Stream(port)
        assert third.status == 429
        assert b"streams_per_client" in third.response.read()
        third.close()
        streams.pop().close()
        wait_until(
            lambda: _metric(port, "framechain_api_live_streams") == 1,
            10,
            "the closed stream let go",
        )
        again = _Stream(port)
        assert again.status == 200
        streams.append(again)

        # everyone leaves: the track stage stops copying within the demand's hold
        for each in streams:
            each.close()
        streams.clear()
        time.sleep(HOLD_S + 2)
        made = _metric(port, "framechain_previews_total")
        assert made > 0
        time.sleep(3)
        assert _metric(port, "framechain_previews_total") == made

        # stopped while a viewer watches: the stream ends, nothing is cut off
        streams.append(_Stream(port))
        streams[-1].pictures(1.0)
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=120)
        assert run.returncode == 0, stderr[-3000:]
        assert "Traceback" not in stderr and "Exception in ASGI" not in stderr
    finally:
        for each in streams:
            each.close()
        end_run(run)


@pytest.mark.slow
def test_event_snapshots_are_served_from_the_snapshot_folder_only(
    tmp_path: Path,
) -> None:
    port = free_port()
    run = spawn_run(_config(tmp_path, port), chain_env())
    db = tmp_path / "events.db"
    try:

        def crossing_with_snapshot() -> dict[str, Any] | None:
            # the file appears before the sink has created its table
            try:
                with contextlib.closing(
                    sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
                ) as connection:
                    connection.row_factory = sqlite3.Row
                    row = connection.execute(
                        "SELECT * FROM events WHERE kind = 'line_crossing' "
                        "AND snapshot != '' LIMIT 1"
                    ).fetchone()
            except sqlite3.Error:
                return None
            return dict(row) if row else None

        wait_until(
            lambda: crossing_with_snapshot() is not None,
            180,
            "a line crossing with a snapshot",
            alive=lambda: run.poll() is None,
        )
        event = crossing_with_snapshot()
        assert event is not None
        # the event carries its snapshot's URL on the API
        base = f"http://127.0.0.1:{port}"
        quoted = urllib.parse.quote(event["event_id"], safe=":")
        assert event["snapshot_url"] == f"{base}/api/events/{quoted}/snapshot.jpg"
        assert event["clip_url"] == ""  # no clips on this camera
        status, jpeg, headers = _get(port, event["snapshot_url"].removeprefix(base))
        assert status == 200 and headers["content-type"] == "image/jpeg"
        assert jpeg == Path(event["snapshot"]).read_bytes()
        _picture(jpeg)

        # rows as another config or a forger left them: no snapshot, and one
        # pointing at a file outside the snapshot folder
        forged = {"east:mid:line_crossing:1:999999998": "", FORGED: "/etc/passwd"}
        with sqlite3.connect(db, timeout=10) as connection:
            columns = [r[1] for r in connection.execute("PRAGMA table_info(events)")]
            for event_id, snapshot in forged.items():
                row = {**event, "event_id": event_id, "snapshot": snapshot}
                connection.execute(
                    f"INSERT INTO events ({', '.join(columns)}) VALUES "
                    f"({', '.join('?' * len(columns))})",
                    [row[c] for c in columns],
                )
        status, body, _ = _get(
            port, "/api/events/east:mid:line_crossing:1:999999998/snapshot.jpg"
        )
        assert status == 404 and b"has no snapshot" in body
        status, body, _ = _get(port, f"/api/events/{FORGED}/snapshot.jpg")
        assert status == 404 and b"not in camera" in body and b"root:" not in body
        assert _get(port, "/api/events/no:such:event:1:1/snapshot.jpg")[0] == 404
    finally:
        end_run(run)


def test_previews_are_redacted_scaled_and_made_only_while_wanted(
    tmp_path: Path,
) -> None:
    """The preview tap on its own: nothing while the demand file is absent or
    old; when wanted, a copy at the preview's width with boxes and lines scaled
    to it and the private class hidden before it leaves the track stage."""
    import os

    from pipeline.demand import Demand, DemandProbe, demand_path
    from pipeline.detections import Detections
    from pipeline.messages import Detected, Frame, Overlay, OverlayLine
    from pipeline.settings import PreviewConfig
    from stages.track.config import PrivacyConfig
    from stages.track.preview import PreviewTap
    from stages.track.taps import MediaTaps

    width, height = 800, 450
    pixels = np.full((height, width, 3), 255, np.uint8)  # white
    pixels[150:250:4, 150:250] = 0  # a striped "person" to hide
    frame = Frame("east", 1, time.time(), 0.0, width, height, 25.0, None)
    message = Detected(frame, 1, ("person",), tracked=True, pixels=True)
    tracked = Detections(
        np.array([[140, 140, 260, 260]], np.float32),
        np.array([0.9], np.float32),
        np.array([0], np.int32),
        np.array([7], np.int64),
    )
    line = OverlayLine("mid", (0.0, 300.0), (800.0, 300.0), 3, 1)
    probe = DemandProbe(demand_path(tmp_path, "preview", "east"))
    tap = PreviewTap(PreviewConfig(width=400, fps=30), probe)
    taps = MediaTaps("east", privacy=PrivacyConfig(method="fill"), preview=tap)
    taps.resolve_classes(("person",))
    parts = [*tracked.to_parts(), pixels.data]

    def preview() -> tuple[Any, ...]:
        probe._checked = float("-inf")  # look at the file now, not in 0.5 s
        return taps.preview(message, parts, tracked, lambda: Overlay(lines=(line,)))

    assert preview() == ()  # never asked
    Demand(tmp_path, "preview").ask("east")
    (emit,) = preview()
    assert emit.port == "preview" and tap.made == 1
    header = emit.message
    assert (header.frame.width, header.frame.height) == (400, 224)
    assert header.frame.shm is None and header.pixels
    sy = 224 / 450
    shown = Detections.from_parts(1, emit.parts, tracked=True)
    assert shown.xyxy.tolist()[0] == pytest.approx([70, 140 * sy, 130, 260 * sy])
    assert header.overlay.lines[0].start == pytest.approx((0, 300 * sy))
    small = np.frombuffer(emit.parts[-1], np.uint8).reshape(224, 400, 3)
    # the person's box is filled (black) in the copy, the white around it kept
    assert small[72:128, 72:127].max() == 0
    assert small[10:30, 300:380].min() == 255
    # a lapsed demand stops the copies
    path = demand_path(tmp_path, "preview", "east")
    old = time.time() - HOLD_S - 1
    os.utime(path, (old, old))
    assert preview() == ()
