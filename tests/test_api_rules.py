"""Rules edited over HTTP against a real chain: a PUT of a new line is written
into the config file with its comments kept and counts on the chain's next
frames, tracks kept; an invalid rule is answered 422 naming its field and
changes nothing; a request another site's page could send is refused."""

from __future__ import annotations

import http.client
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import ASSETS, chain_env, end_run, free_port, spawn_run, wait_until

CONFIG = """\
# the door camera: a looped clip played as live
models_dir: {assets}
cameras:
  east:
    source: {{kind: file, path: {clip}, live: true, loop: true}}  # as a camera
    rules:
      # people crossing the middle of the picture
      - {{kind: line, name: mid, start: [0, 300], end: [800, 300], anchor: center,
          classes: [person]}}
detector: {{model: yolo11n.onnx, imgsz: 320}}
sinks:
  - {{kind: sqlite, path: {db}}}  # what the API reads
http: {{listen: "127.0.0.1:{port}", api: true}}
"""
UPPER = {
    "kind": "line",
    "name": "upper",
    "start": [0, 330],
    "end": [800, 330],
    "anchor": "center",
    "classes": ["person"],
}
MID = {**UPPER, "name": "mid", "start": [0, 300], "end": [800, 300]}


def _put(
    port: int, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(
            "PUT",
            "/api/cameras/east/rules",
            body=json.dumps(body),
            headers=headers or {"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def _rules_counted(db: Path) -> set[str]:
    if not db.exists():
        return set()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        try:
            rows = connection.execute(
                "SELECT DISTINCT rule FROM events WHERE kind = 'line_crossing'"
            )
            return {r[0] for r in rows}
        except sqlite3.OperationalError:
            return set()


def _get(port: int, path: str) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _tracked(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/api/cameras/east")
        response = connection.getresponse()
        return response.status == 200 and json.loads(response.read())["fps_out"] > 0
    except OSError:
        return False
    finally:
        connection.close()


@pytest.mark.slow
def test_a_put_rule_counts_on_the_next_frames_and_keeps_the_comments(
    tmp_path: Path,
) -> None:
    port = free_port()
    db = tmp_path / "events.db"
    config = tmp_path / "door.yaml"
    config.write_text(
        CONFIG.format(assets=ASSETS, clip=ASSETS / "crowd.mp4", db=db, port=port)
    )
    run = spawn_run(config, chain_env())
    try:
        wait_until(
            lambda: _tracked(port),
            120,
            "frames tracked",
            alive=lambda: run.poll() is None,
        )
        before = config.read_bytes()

        # what the API refuses, leaving the file as it was
        status, answer = _put(port, [{**UPPER, "end": None}])
        assert status == 422
        assert answer["detail"].startswith("cameras.east.rules[0].end")
        status, answer = _put(port, [{**UPPER, "kind": "lime"}])
        assert status == 422 and "rules[0]" in answer["detail"]
        status, answer = _put(port, [UPPER, UPPER])  # one name twice
        assert status == 422 and "upper" in answer["detail"]
        status, _ = _put(port, [UPPER], {"Content-Type": "text/plain"})
        assert status == 415
        status, _ = _put(
            port,
            [UPPER],
            {"Content-Type": "application/json", "Origin": "http://evil.example"},
        )
        assert status == 403
        assert config.read_bytes() == before

        status, answer = _put(port, [MID, UPPER])
        assert status == 200, answer
        assert [r["name"] for r in answer["rules"]] == ["mid", "upper"]
        text = config.read_text()
        for comment in (
            "# the door camera: a looped clip played as live",
            "# as a camera",
            "# what the API reads",
        ):
            assert comment in text
        assert "start: [0, 330]" in text
        # the lines it did not change are as they were written
        assert "    source: {kind: file, path:" in text
        # the rule it did not change is as written, its comment with it
        assert (
            "# people crossing the middle of the picture\n      - {kind: line" in text
        )
        assert "name: mid, start: [0, 300]" in text
        status, written = _get(port, "/api/cameras/east/rules")
        assert status == 200 and written == {"camera": "east", "rules": [MID, UPPER]}
        wait_until(
            lambda: "upper" in _rules_counted(db),
            120,
            "a crossing of the new line",
            alive=lambda: run.poll() is None,
        )
        assert "mid" in _rules_counted(db)
    finally:
        end_run(run)
