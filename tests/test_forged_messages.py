"""Forged messages on plain tcp:// links: headers that are valid msgspec but lie
about their payload (pixels too few, sides of a million, a stream nobody serves,
detections without their columns) are dropped and counted by the stage that
receives them, which goes on with the real frames: no stage exits or restarts."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import zmq
from conftest import ASSETS, framechain, free_port, read_events
from live import ChainRun

from pipeline.messages import (
    Detected,
    Event,
    Frame,
    FrameRef,
    Message,
    Packet,
    encode,
)

NOW = time.time()


def _frame(stream: str = "crowd", width: int = 160, height: int = 90) -> Frame:
    return Frame(stream, 10**9, NOW, 0.0, width, height, 25.0, None)


# what each link is sent: (header, parts); all of it must be dropped
Forged = tuple[Message, list[bytes]]
TO_DETECT: list[Forged] = [
    (_frame(), [bytes(10)]),  # 10 bytes of pixels for 160×90×3
    (_frame(), []),  # no pixels at all
    (_frame(width=1_000_000, height=1_000_000), [bytes(64)]),
    (_frame(width=0, height=90), [b""]),
    (_frame(width=-160), [bytes(160 * 90 * 3)]),
    (_frame("evil"), [bytes(160 * 90 * 3)]),  # a stream detect does not serve
    (
        Frame("crowd", 10**9, NOW, 0.0, 160, 90, 25.0, FrameRef("fc-nope", 3, 1)),
        [],
    ),
    (Packet("crowd", 0, NOW, 0.0, True, "h264", 160, 90, 25.0, -1), []),
]
TO_TRACK: list[Forged] = [
    (Detected(_frame(), 50), [bytes(16 * 2), bytes(8), bytes(8)]),  # 50 said, 2 sent
    (Detected(_frame(), 3), []),
    (Detected(_frame(), 10**9), []),
    (Detected(_frame(), 0, pixels=True), [bytes(7)]),
    (Detected(_frame("evil"), 0), []),
]


def _event(kind: str, event_id: str) -> Event:
    return Event(event_id, "crowd", "forged", kind, 1, 0.0, NOW)


# events a sink cannot decode: a kind no registration could have, an id that
# is not an event id, and bytes that are no header at all
TO_SINK: list[bytes] = [
    encode(_event("Not A Kind!", "crowd:forged:x:-1:1")),
    encode(_event("line_crossing", "no id")),
    b"\x93\x01\x02",
]


def _forge(context: zmq.Context[Any], port: int, forged: list[Forged]) -> None:
    _send(context, port, [[encode(header), *parts] for header, parts in forged])


def _send(context: zmq.Context[Any], port: int, messages: list[list[bytes]]) -> None:
    sock = context.socket(zmq.PUSH)
    sock.connect(f"tcp://127.0.0.1:{port}")
    for message in messages:
        sock.send_multipart(message)
    sock.close(linger=2000)


def test_forged_headers_are_dropped_and_counted(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """An event the sink cannot decode is an error it counts and logs (its
    metric and its log line), and a kind it has never heard of is stored like
    any other."""
    detect_port, track_port, sink_port = free_port(), free_port(), free_port()
    config = {
        "models_dir": str(ASSETS),
        "cameras": {
            "crowd": {
                "source": {"kind": "file", "path": str(ASSETS / "crowd.mp4")},
                "decode": {"resize": [160, 90]},
            }
        },
        "detector": {"model": "yolo11n.onnx", "imgsz": 160},
        "sinks": [{"kind": "sqlite", "path": str(tmp_path / "events.db")}],
        "links": {
            "endpoints": {
                "detect.in": f"tcp://127.0.0.1:{detect_port}",
                "track.crowd.in": f"tcp://127.0.0.1:{track_port}",
                "sink.sqlite.in": f"tcp://127.0.0.1:{sink_port}",
            }
        },
    }
    run = ChainRun(tmp_path, config).start()
    deadline = time.monotonic() + 60
    while run.stats("track.crowd").get("frames", 0) < 20:
        assert time.monotonic() < deadline and run.code is None, "chain not running"
        time.sleep(0.1)
    context: zmq.Context[Any] = zmq.Context()
    _forge(context, detect_port, TO_DETECT)
    _forge(context, track_port, TO_TRACK)
    unknown = _event("kind_from_elsewhere", "crowd:forged:kind_from_elsewhere:-1:1")
    _send(context, sink_port, [[m] for m in [*TO_SINK, encode(unknown)]])
    context.destroy(linger=0)
    deadline = time.monotonic() + 120
    while run.code is None:
        assert time.monotonic() < deadline, "the chain did not finish"
        time.sleep(0.2)
    assert run.code == 0
    assert run.supervisor.restart_count == 0
    detect, track = run.stats("detect"), run.stats("track.crowd")
    assert detect["invalid_messages"] == len(TO_DETECT)
    assert track["invalid_messages"] == len(TO_TRACK)
    assert track["frames"] == 460  # every real frame went through
    assert detect["received"] == 461  # the real ones: 460 frames and the end
    sink = run.stats("sink.sqlite")
    assert sink["undecodable"] == sink["invalid_messages"] == len(TO_SINK)
    stored = read_events(tmp_path / "events.db")
    assert [e["kind"] for e in stored if e["rule"] == "forged"] == [unknown.kind]
    log = capfd.readouterr().err
    assert "sink sqlite: 1 event(s) could not be decoded" in log
    assert "sink sqlite: 2 event(s) could not be decoded" in log


def test_runtime_dir_is_made_private(tmp_path: Path) -> None:
    """An existing runtime_dir open to others (0755, as systemd makes it) is
    narrowed to 0700 before any socket is made in it."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o755)
    os.chmod(runtime, 0o755)
    config = tmp_path / "c.yaml"
    config.write_text(
        f"runtime_dir: {runtime}\n"
        f"cameras:\n  cam:\n    source: {{kind: file, path: {ASSETS / 'crowd.mp4'}}}\n"
        "    decode: {every_nth: 20}\n"
        f"detector: {{model: yolo11n.onnx, imgsz: 160}}\n"
        f"sinks: [{{kind: sqlite, path: {tmp_path / 'e.db'}}}]\n"
    )
    result = framechain("run", str(config), "--no-progress", timeout=120)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(runtime.stat().st_mode) == 0o700
