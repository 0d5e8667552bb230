"""What people look at: the annotated MJPEG page in a real headless Chromium, the
annotated MP4, and the store read back by ``framechain events`` and ``report``."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import yaml
from conftest import ASSETS, end_run, framechain, free_port, read_events, spawn_run
from conftest import CROWD_LEFT_HALF as ZONE
from conftest import CROWD_LINE as LINE

LINE_RGB = (255, 215, 0)  # stages.annotate.drawing.LINE_COLOUR, as RGB
CLIP_FRAMES = 460


def chromium_screenshot(url: str, out: Path, profile: Path) -> None:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.fail("chromium is not installed; run tests/install-system-deps.sh")
    subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--window-size=900,560",
            f"--screenshot={out}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )


def colour_pixels(image_rgb: np.ndarray, rgb: tuple[int, int, int]) -> int:
    distance = np.abs(image_rgb.astype(np.int16) - np.array(rgb, np.int16)).sum(axis=2)
    return int((distance < 60).sum())


@pytest.fixture(scope="module")
def annotated_run(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("annotate")
    port = free_port()
    source = {"kind": "file", "path": str(ASSETS / "crowd.mp4"), "realtime": True}
    config = {
        "models_dir": str(ASSETS),
        "cameras": {
            "crowd": {
                "source": source,
                "rules": [LINE, ZONE],
                "annotate": {"video": str(tmp / "annotated.mp4"), "http_port": port},
            }
        },
        "sinks": [{"kind": "sqlite", "path": str(tmp / "events.db")}],
    }
    path = tmp / "annotate.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    process = spawn_run(path)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/snapshot.jpg", timeout=5
                ) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.3)
        time.sleep(2)  # a few seconds in: people and counts on screen
        chromium_screenshot(
            f"http://127.0.0.1:{port}/", tmp / "page.png", tmp / "chromium"
        )
        stdout, stderr = process.communicate(timeout=120)
    finally:
        end_run(process)
    assert process.returncode == 0, stderr[-3000:]
    return tmp, stdout


def test_mjpeg_page_in_chromium_shows_the_annotated_stream(annotated_run) -> None:
    """The page rendered by a real browser holds a live frame: not blank, with the
    counting line drawn in its colour and people boxed in between."""
    tmp, _ = annotated_run
    page = cv2.cvtColor(cv2.imread(str(tmp / "page.png")), cv2.COLOR_BGR2RGB)
    frame = page[20:470, 0:800]  # below the page's one-line caption
    assert frame.std() > 30, "blank"
    assert (np.abs(frame.astype(int) - 17).sum(axis=2) > 30).mean() > 0.9, (
        "the stream does not fill its place on the page"
    )
    assert colour_pixels(frame, LINE_RGB) > 500, "no counting line drawn"


def test_annotated_video_plays_at_the_source_pace(annotated_run) -> None:
    """The MP4 decodes, holds nearly every frame, lasts as long as the clip, and
    differs from the source where the annotations are."""
    tmp, _ = annotated_run
    (segment,) = tmp.glob("annotated-*.mp4")  # one time-named segment per start
    with av.open(str(segment)) as container:
        stream = container.streams.video[0]
        decoded = list(container.decode(stream))
        frames = [f.to_ndarray(format="rgb24") for f in decoded]
        duration = float((decoded[-1].pts - decoded[0].pts) * stream.time_base)
    assert len(frames) >= 0.8 * CLIP_FRAMES, len(frames)
    assert abs(duration - CLIP_FRAMES / 23.98) < 1.5, duration
    assert frames[0].shape == (450, 800, 3)
    drawn = [colour_pixels(f[290:310], LINE_RGB) for f in frames[::20]]
    assert min(drawn) > 300, drawn


def test_events_cli_filters_and_formats(annotated_run) -> None:
    tmp, _ = annotated_run
    db = tmp / "events.db"
    stored = read_events(db)
    crossings = [e for e in stored if e["kind"] == "line_crossing"]
    result = framechain(
        "events", str(db), "--kind", "line_crossing", "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["event_id"] for r in rows} == {e["event_id"] for e in crossings}
    assert [r["capture_ts"] for r in rows] == sorted(r["capture_ts"] for r in rows)
    result = framechain("events", str(db), "--rule", "left", "--format", "csv")
    table = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(table) == sum(e["rule"] == "left" for e in stored)
    assert {r["kind"] for r in table} <= {"zone_occupancy", "zone_enter", "zone_exit"}
    assert {r["low_confidence"] for r in table} <= {"true", "false"}
    result = framechain(
        "events", str(db), "--camera", "nope", "--kind", "line_crossing"
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: no camera 'nope' in {db}; it holds: "
        + ", ".join(sorted({e["stream_id"] for e in stored}))
    ]
    result = framechain("events", str(db), "--kind", "line_crosing")
    assert result.returncode == 1 and "it holds: line_crossing" in result.stderr
    middle = sorted(e["capture_ts"] for e in stored)[len(stored) // 2]
    result = framechain("events", str(db), "--since", str(middle), "--limit", "5")
    assert result.returncode == 0 and result.stdout.splitlines()[-1] == "5 events"
    result = framechain("events", str(db), "--since", "last tuesday")
    assert result.returncode == 1 and result.stderr.startswith("error: cannot read")
    assert "Traceback" not in result.stderr


def test_report_png_is_a_real_chart(annotated_run) -> None:
    """The report has both panels' content: bars in two colours and a step line,
    at a sensible size."""
    tmp, _ = annotated_run
    out = tmp / "report.png"
    result = framechain("report", str(tmp / "events.db"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "2 count series, 1 level series" in result.stdout
    image = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    assert image.shape[0] >= 500 and image.shape[1] >= 800
    blue, orange = (31, 119, 180), (255, 127, 14)  # matplotlib's first two colours
    top, bottom = image[: image.shape[0] // 2], image[image.shape[0] // 2 :]
    assert colour_pixels(top, blue) > 500 and colour_pixels(top, orange) > 500
    assert colour_pixels(bottom, blue) > 300
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50


def test_annotate_port_taken_fails_the_run_at_once(tmp_path: Path) -> None:
    """An MJPEG port that another process holds: the run fails at start with one
    line naming the port (no five restarts, no exit 0 without the video)."""
    import socket

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    config = {
        "models_dir": str(ASSETS),
        "cameras": {
            "crowd": {
                "source": {"kind": "file", "path": str(ASSETS / "crowd.mp4")},
                "annotate": {"video": str(tmp_path / "a.mp4"), "http_port": port},
            }
        },
        "detector": {"model": "yolo11n.onnx", "imgsz": 160},
        "sinks": [{"kind": "sqlite", "path": str(tmp_path / "events.db")}],
    }
    path = tmp_path / "taken.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    started = time.monotonic()
    try:
        result = framechain("run", str(path), "--no-progress", timeout=120)
    finally:
        holder.close()
    assert time.monotonic() - started < 30
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("framechain: stage annotate.crowd cannot run:"), last
    assert f"annotate.http_port {port}" in last and "pick a free port" in last
    assert "restarting" not in result.stderr and "Traceback" not in result.stderr


def test_frames_out_of_order_are_all_written(tmp_path: Path) -> None:
    """A damaged stream's decoder hands frames over out of order, some less than
    a frame apart: every frame is written, in order of arrival, and the video's
    length stays the source's (disorder is not taken for a clock restart)."""
    from stages.annotate.stage import Mp4Writer

    # seconds as a damaged 24 fps H.264 stream's decoder gave them (measured)
    times = [1.627, 1.376, 1.585, 1.502, 1.793, 1.543, 1.752, 1.668, 1.960, 1.710]
    times = [i / 24 for i in range(30)] + [t + 0.5 for t in times]
    path = tmp_path / "disorder.mp4"
    writer = Mp4Writer(str(path))
    image = np.zeros((240, 320, 3), np.uint8)
    for i, t in enumerate(times):
        image[:] = i * 5
        writer.write(image, t, 24.0)
    writer.close()
    with av.open(str(path)) as container:
        stamps = [f.time for f in container.decode(video=0)]
    assert len(stamps) == len(times)
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert stamps[-1] < max(times) + 0.1
