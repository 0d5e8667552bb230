"""The HTTP API against a real chain: two looped file cameras played as live, the
API service on a non-loopback address behind a token, every endpoint asked over
real HTTP; then the same service alone on the finished store, compared with
``framechain events`` and with the run's summary, and fuzzed from its own
OpenAPI document by schemathesis."""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import (
    ASSETS,
    CROWD_LEFT_HALF,
    CROWD_LINE,
    REPO,
    chain_env,
    end_run,
    framechain,
    free_port,
    spawn_run,
    wait_until,
)

TOKEN = "t0ken-for-the-api-test"
MQTT_PASSWORD = "mqtt-pa55-never-shown"


def _config(tmp: Path, port: int, listen_host: str = "0.0.0.0") -> Path:
    def camera() -> dict[str, Any]:
        return {
            "source": {
                "kind": "file",
                "path": str(ASSETS / "crowd.mp4"),
                "live": True,
                "loop": True,
            },
            "rules": [CROWD_LINE, CROWD_LEFT_HALF],
        }

    config = {
        "models_dir": str(ASSETS),
        "cameras": {"east": camera(), "west": camera()},
        "detector": {"model": "yolo11n.onnx", "imgsz": 320},
        "sinks": [
            {"kind": "sqlite", "path": str(tmp / "events.db")},
            # never reachable: its password must still never be shown
            {
                "kind": "mqtt",
                "host": "127.0.0.1",
                "port": free_port(),
                "username": "framechain",
                "password": "${TEST_MQTT_PASSWORD}",
            },
        ],
        "http": {
            "listen": f"{listen_host}:{port}",
            "api": True,
            "token": "${TEST_API_TOKEN}",
        },
    }
    path = tmp / "api.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _env() -> dict[str, str]:
    return {
        **chain_env(),
        "TEST_API_TOKEN": TOKEN,
        "TEST_MQTT_PASSWORD": MQTT_PASSWORD,
    }


def _get(
    port: int, path: str, token: str | None = TOKEN, basic: bool = False
) -> tuple[int, Any, dict[str, str]]:
    """(status, body: JSON when it is, else text, headers) of a real GET."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        if basic:
            pair = base64.b64encode(f"anyone:{token}".encode()).decode()
            request.add_header("Authorization", f"Basic {pair}")
        else:
            request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw, headers = response.status, response.read(), response.headers
    except urllib.error.HTTPError as e:
        status, raw, headers = e.code, e.read(), e.headers
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, None, {}  # not listening (yet)
    text = raw.decode()
    try:
        body: Any = json.loads(text)
    except ValueError:
        body = text
    return status, body, dict(headers)


def _all_events(port: int, query: str = "", limit: int = 37) -> list[dict[str, Any]]:
    """Every page of /api/events, following ``next``."""
    events: list[dict[str, Any]] = []
    cursor = None
    while True:
        tail = f"&cursor={cursor}" if cursor else ""
        status, page, _ = _get(port, f"/api/events?limit={limit}{query}{tail}")
        assert status == 200, page
        assert len(page["events"]) <= limit
        events += page["events"]
        cursor = page["next"]
        if cursor is None:
            return events


def _summary_counts(stdout: str) -> Counter[tuple[str, str, str]]:
    """(camera, rule, what) -> n from the run summary's per-camera lines."""
    counts: Counter[tuple[str, str, str]] = Counter()
    camera = ""
    for line in stdout.splitlines():
        heading = re.match(r"^  camera (\S+?):", line)
        if heading:
            camera = heading.group(1)
            continue
        row = re.match(r"^    (\S+)\s+(.+?)\s+(\d+)$", line)
        what = row.group(2).strip() if row else ""
        if camera and row and re.fullmatch(r"\S+ (in|out)|zone_\w+|loitering", what):
            counts[(camera, row.group(1), what)] += int(row.group(3))
    return counts


@pytest.mark.slow
def test_the_api_answers_for_a_running_chain_and_agrees_with_the_store(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = _config(tmp_path, port)
    run = spawn_run(config, _env())
    try:
        wait_until(
            lambda: _get(port, "/healthz", token=None)[0] == 200,
            90,
            "the API",
            alive=lambda: run.poll() is None,
        )
        status, document, _ = _get(port, "/openapi.json")
        assert status == 200
        paths = [p for p in document["paths"] if "{" not in p]
        # the token guards every path but /healthz and the console's sign-in, by
        # bearer and by basic
        for path in paths:
            want = 200 if path in ("/healthz", "/api/session") else 401
            assert _get(port, path, token=None)[0] == want, path
            assert _get(port, path, token="wrong")[0] == want, path
        assert _get(port, "/api/config", basic=True)[0] == 200

        def cameras_running() -> bool:
            status, cameras, _ = _get(port, "/api/cameras")
            return status == 200 and all(
                c["state"] == "online" and c["fps_out"] > 0 for c in cameras
            )

        wait_until(cameras_running, 120, "both cameras online and tracked")

        def enough_events() -> bool:
            status, page, _ = _get(port, "/api/events?kind=line_crossing&limit=5")
            return status == 200 and len(page["events"]) >= 5

        wait_until(enough_events, 180, "line crossings through the API")
        # the event stream: every event stored from now on, once, in the order
        # it was stored, as stored; resumed after Last-Event-ID
        stream = _EventStream(port)
        streamed = stream.read(12)
        stream.close()
        ids = [i for i, _ in streamed]
        stored = _rows_after(tmp_path / "events.db", ids[0], ids[-1])
        assert [i for i, _ in stored] == ids
        for (_, got), (_, row) in zip(streamed, stored, strict=True):
            assert got["event_id"] == row["event_id"]
            assert got["capture_ts"] == row["capture_ts"]
            assert got["data"] == json.loads(row["data"])
        resumed = _EventStream(port, last=ids[4])
        assert resumed.read(3) == streamed[5:8]
        resumed.close()
        crossings = _EventStream(port, "?kind=line_crossing&camera=west")
        assert all(
            e["kind"] == "line_crossing" and e["stream_id"] == "west"
            for _, e in crossings.read(3)
        )
        crossings.close()
        status, cameras, _ = _get(port, "/api/cameras")
        assert [c["name"] for c in cameras] == ["east", "west"]
        for camera in cameras:
            assert camera["chain"] == "ok" and camera["fps_in"] > 0
            assert 0 < camera["detector_share"] < 1
            assert [r["name"] for r in camera["rules"]] == ["mid", "left"]
        assert _get(port, "/api/cameras/east")[1]["name"] == "east"
        status, missing, _ = _get(port, "/api/cameras/north")
        assert status == 404 and "known: east, west" in missing["detail"]
        status, page, _ = _get(port, "/api/events?limit=3")
        newest = page["events"][0]
        assert _get(port, f"/api/events/{newest['event_id']}")[1] == newest
        assert _get(port, "/api/events/no:such:event:-1:1")[0] == 404
        status, bad, _ = _get(port, "/api/events?kind=no_such_kind")
        assert status == 422 and "known: line_crossing" in bad["detail"]
        assert _get(port, "/api/events?since=last+tuesday")[0] == 422
        assert _get(port, "/api/events?cursor=bm90IGEgY3Vyc29y")[0] == 422
        status, ready, _ = _get(port, "/readyz")
        assert status == 200 and set(ready["cameras"]) == {"east", "west"}
        status, metrics, headers = _get(port, "/metrics")
        assert status == 200 and "framechain_stage_up" in metrics
        assert "framechain_api_requests_total" in metrics
        assert headers["content-type"].startswith("text/plain")
        status, shown, _ = _get(port, "/api/config")
        text = json.dumps(shown)
        assert status == 200 and shown["cameras"]["east"]["rules"][0]["name"] == "mid"
        assert TOKEN not in text and MQTT_PASSWORD not in text
        run.send_signal(signal.SIGTERM)
        stdout, stderr = run.communicate(timeout=120)
    finally:
        end_run(run)
    assert run.returncode == 0, stderr[-3000:]
    assert TOKEN not in stdout + stderr and MQTT_PASSWORD not in stdout + stderr

    # the same service alone on the finished store
    with _alone(config, tmp_path) as alone:
        stored = framechain("events", str(tmp_path / "events.db"), "--format", "json")
        every = [json.loads(line) for line in stored.stdout.splitlines()]
        through_api = _all_events(alone)
        assert [e["event_id"] for e in through_api] == [
            e["event_id"] for e in reversed(every)
        ]
        assert through_api == list(reversed(every))
        chosen = framechain(
            "events",
            str(tmp_path / "events.db"),
            "--camera",
            "west",
            "--kind",
            "line_crossing",
            "--format",
            "json",
        )
        want = [json.loads(line)["event_id"] for line in chosen.stdout.splitlines()]
        got = _all_events(alone, "&camera=west&kind=line_crossing", limit=4)
        assert want and [e["event_id"] for e in reversed(got)] == want
        track = every[0]["track_id"]
        by_track = _all_events(alone, f"&camera={every[0]['stream_id']}&track={track}")
        assert by_track and all(
            e["track_id"] == track and e["stream_id"] == every[0]["stream_id"]
            for e in by_track
        )

        # /api/counts is the summary's counts: crossings by rule, class and
        # direction, zone visits by rule and kind
        status, counted, _ = _get(alone, "/api/counts?bucket=day")
        assert status == 200 and counted["bucket_s"] == 86400
        api: Counter[tuple[str, str, str]] = Counter()
        for row in counted["counts"]:
            if row["kind"] == "line_crossing":
                what = f"{row['class_name']} {row['direction']}"
            elif row["kind"] in ("zone_enter", "zone_exit", "loitering"):
                what = row["kind"]
            else:
                continue
            api[(row["camera"], row["rule"], what)] += row["count"]
        summary = _summary_counts(stdout)
        assert summary and api == summary, (api, summary)
        assert sum(n for (_, _, w), n in api.items() if w.endswith(" in")) > 0


class _EventStream:
    """One /api/events/stream answer, read message by message."""

    def __init__(self, port: int, query: str = "", last: int | None = None) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        if last is not None:
            headers["Last-Event-ID"] = str(last)
        self.connection.request("GET", f"/api/events/stream{query}", headers=headers)
        self.response = self.connection.getresponse()
        assert self.response.status == 200, self.response.read()
        assert self.response.getheader("content-type", "").startswith(
            "text/event-stream"
        )

    def read(self, count: int) -> list[tuple[int, dict[str, Any]]]:
        """The next ``count`` messages: (id, event)."""
        messages: list[tuple[int, dict[str, Any]]] = []
        fields: dict[str, str] = {}
        while len(messages) < count:
            line = self.response.readline().decode().rstrip("\n")
            if line:
                key, _, value = line.partition(":")
                fields[key] = value.removeprefix(" ")
            elif "data" in fields:
                messages.append((int(fields["id"]), json.loads(fields["data"])))
                fields = {}
            else:
                fields = {}  # retry, or a keep-alive comment
        return messages

    def close(self) -> None:
        self.connection.close()


def _rows_after(db: Path, first: int, last: int) -> list[tuple[int, dict[str, Any]]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        connection.row_factory = sqlite3.Row
        rows = connection.execute(
            "SELECT rowid AS _row, * FROM events WHERE rowid BETWEEN ? AND ? "
            "ORDER BY rowid",
            (first, last),
        ).fetchall()
    return [(r["_row"], {k: r[k] for k in r.keys() if k != "_row"}) for r in rows]


class _alone:
    """``framechain stage api`` without a supervisor, on the config's store."""

    def __init__(self, config: Path, tmp: Path) -> None:
        self.config, self.tmp = config, tmp
        self.port = free_port()

    def __enter__(self) -> int:
        text = self.config.read_text().replace(
            yaml.safe_load(self.config.read_text())["http"]["listen"],
            f"127.0.0.1:{self.port}",
        )
        alone = self.tmp / "alone.yaml"
        alone.write_text(text)
        runtime = self.tmp / "alone-run"
        runtime.mkdir(mode=0o700, exist_ok=True)
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "framechain.cli", "stage", "api"),
                *("--config", str(alone), "--runtime-dir", str(runtime)),
            ],
            cwd=REPO,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_until(
            lambda: _get(self.port, "/openapi.json")[0] == 200,
            60,
            "the API alone",
            alive=lambda: self.process.poll() is None,
        )
        return self.port

    def __exit__(self, *_: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.mark.slow
def test_generated_requests_get_no_server_error_and_valid_answers(
    tmp_path: Path,
) -> None:
    """schemathesis against /openapi.json of the API on a store of real events:
    no 5xx on any generated request, every answer valid against its schema. The
    probes (/healthz, /readyz, /metrics) and the live pictures rightly answer
    503 here, with no supervisor, and the event stream never ends (a fuzzer
    cannot read it): the running chain's tests ask them."""
    from conftest import run_to_end

    config = _config(tmp_path, free_port(), "127.0.0.1")
    document = yaml.safe_load(config.read_text())
    camera = document["cameras"]["east"]
    camera["source"] = {"kind": "file", "path": str(ASSETS / "crowd.mp4")}
    document["cameras"] = {"east": camera}
    document["http"] = {"listen": document["http"]["listen"], "api": False}
    document["sinks"] = document["sinks"][:1]
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    run_to_end(config, _env())
    document["http"] = {"listen": document["http"]["listen"], "api": True}
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    with _alone(config, tmp_path) as port:
        result = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")),
                "run",
                f"http://127.0.0.1:{port}/openapi.json",
                "--checks",
                "not_a_server_error,response_schema_conformance,"
                "content_type_conformance,status_code_conformance",
                "--max-time",
                "45",
                "--exclude-path-regex",
                r"^/(healthz|readyz|metrics)$|/(latest\.jpg|stream\.mjpeg|stream)$",
                "--workers",
                "1",
                "--seed",
                "1",
                "--request-timeout",
                "10",
            ],
            capture_output=True,
            text=True,
            timeout=240,
            env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""},
            cwd=tmp_path,  # its cache folder goes there, not into the work tree
        )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_an_api_beyond_loopback_without_a_token_is_refused_in_one_line(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, free_port())
    document = yaml.safe_load(config.read_text())
    del document["http"]["token"]
    config.write_text(yaml.safe_dump(document))
    result = framechain("validate", str(config), env_extra=_env())
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "set token" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    document["http"]["listen"] = "127.0.0.1:8080"
    config.write_text(yaml.safe_dump(document))
    assert framechain("validate", str(config), env_extra=_env()).returncode == 0
    document["sinks"] = document["sinks"][1:]
    config.write_text(yaml.safe_dump(document))
    result = framechain("validate", str(config), env_extra=_env())
    assert result.returncode == 2 and "add {kind: sqlite" in result.stderr


def test_secrets_are_masked_wherever_they_hide() -> None:
    from stages.api.redact import redact

    shown = redact(
        {
            "source": {"url": "rtsp://viewer:hunter2@10.0.0.21/stream1?token=abc&x=1"},
            "password": "**********",
            "sinks": [{"headers": {"Authorization": "Bearer xyz"}, "url": "http://h/"}],
            "api_key": "k",
            "count": 3,
        }
    )
    text = json.dumps(shown)
    for secret in ("hunter2", "abc", "xyz", '"k"'):
        assert secret not in text
    assert shown["source"]["url"] == "rtsp://viewer:***@10.0.0.21/stream1?token=***&x=1"
    assert shown["count"] == 3 and shown["sinks"][0]["url"] == "http://h/"


@pytest.mark.slow
def test_the_api_killed_or_frozen_leaves_the_chain_s_events_as_without_it(
    tmp_path: Path,
) -> None:
    """The API service killed -9 while a client watches a live picture and the
    event stream, then SIGSTOPped for 30 s: the chain's events are those of a
    run without the API, field for field."""
    from conftest import run_to_end, stage_pid

    clip = tmp_path / "crowd-twice.mp4"  # 38 s played as it was filmed
    subprocess.run(
        [
            *("ffmpeg", "-v", "error", "-stream_loop", "1"),
            *("-i", str(ASSETS / "crowd.mp4"), "-c", "copy", str(clip)),
        ],
        check=True,
        timeout=60,
    )

    def config(folder: Path, api: bool) -> Path:
        folder.mkdir()
        document = {
            "models_dir": str(ASSETS),
            "cameras": {
                "east": {
                    "source": {"kind": "file", "path": str(clip), "realtime": api},
                    "rules": [CROWD_LINE, CROWD_LEFT_HALF],
                    "snapshots": {"directory": str(folder / "snapshots")},
                }
            },
            "detector": {"model": "yolo11n.onnx", "imgsz": 320},
            "sinks": [{"kind": "sqlite", "path": str(folder / "events.db")}],
            # a frozen service is left frozen for the 30 s
            "supervisor": {"heartbeat_timeout_s": 60, "stop_timeout_s": 3},
        }
        if api:
            document["http"] = {"listen": f"127.0.0.1:{port}", "api": True}
        path = folder / "chain.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    def comparable(db: Path) -> dict[str, dict[str, Any]]:
        with sqlite3.connect(db) as connection:
            connection.row_factory = sqlite3.Row
            rows = connection.execute("SELECT * FROM events").fetchall()
        ignored = {"capture_ts", "snapshot", "snapshot_url"}
        return {
            r["event_id"]: {k: r[k] for k in r.keys() if k not in ignored} for r in rows
        }

    port = free_port()
    run_to_end(config(tmp_path / "alone", api=False), _env(), timeout=300)
    beside = spawn_run(config(tmp_path / "beside", api=True), _env())
    db = tmp_path / "beside" / "events.db"
    try:
        wait_until(
            lambda: _get(port, "/healthz", token=None)[0] == 200,
            90,
            "the API",
            alive=lambda: beside.poll() is None,
        )
        watching = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        watching.request(
            "GET",
            "/api/cameras/east/stream.mjpeg",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert watching.getresponse().status == 200
        stream = _EventStream(port)
        stream.read(3)
        pid = stage_pid("api", beside.pid)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_until(
            lambda: stage_pid("api", beside.pid) not in (None, pid),
            30,
            "the API restarted",
            alive=lambda: beside.poll() is None,
        )
        restarted = stage_pid("api", beside.pid)
        assert restarted is not None
        wait_until(lambda: _get(port, "/healthz", token=None)[0] == 200, 30, "API")
        os.kill(restarted, signal.SIGSTOP)
        time.sleep(30)
        os.kill(restarted, signal.SIGCONT)
        _, stderr = beside.communicate(timeout=180)
        watching.close()
        stream.close()
    finally:
        end_run(beside)
    assert beside.returncode == 0, stderr[-3000:]
    alone = comparable(tmp_path / "alone" / "events.db")
    assert len(alone) > 40
    assert comparable(db) == alone
