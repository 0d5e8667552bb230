"""Network sinks against real servers on loopback: a mosquitto broker that goes away
for 30 s in the middle of a run, and an HTTP receiver that fails its first requests.
Every event the run stored in SQLite must arrive, once, in order."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from conftest import (
    ASSETS,
    end_run,
    framechain,
    free_port,
    poll_store,
    read_events,
    spawn_run,
)
from conftest import CROWD_LEFT_HALF as ZONE
from conftest import CROWD_LINE as LINE
from helpers.mqtt import Mosquitto, Subscriber

CROWD = {"kind": "crowd", "name": "busy", "threshold": 8, "min_duration_s": 1.0}


def crowd_config(
    tmp: Path, sink: dict[str, Any], realtime: bool, imgsz: int = 640
) -> Path:
    source = {"kind": "file", "path": str(ASSETS / "crowd.mp4"), "realtime": realtime}
    config = {
        "models_dir": str(ASSETS),
        "cameras": {"crowd": {"source": source, "rules": [LINE, ZONE, CROWD]}},
        "detector": {"model": "yolo11n.onnx", "imgsz": imgsz},
        "sinks": [{"kind": "sqlite", "path": str(tmp / "events.db")}, sink],
    }
    path = tmp / "sinks.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.slow
def test_mqtt_broker_outage_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """Events arrive on the documented topics; the broker stops for 30 s mid-run
    and comes back: every event stored in SQLite is delivered, in order, none twice
    but what QoS 1 allows (a message in flight when the broker died); retained
    totals and Home Assistant discovery configs are right."""
    broker = Mosquitto(tmp_path)
    broker.start()
    subscriber = Subscriber(broker.port)
    sink = {
        "kind": "mqtt",
        "host": "127.0.0.1",
        "port": broker.port,
        "retry_max_s": 2,
        "spool_dir": str(tmp_path / "spool"),
    }
    config = crowd_config(tmp_path, sink, realtime=True)
    process = spawn_run(config)
    try:
        deadline = time.monotonic() + 90
        while len(subscriber.events()) < 20 and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            time.sleep(0.2)
        assert len(subscriber.events()) >= 20, "no events over MQTT"
        broker.stop()
        outage_started = time.monotonic()
        time.sleep(30)
        assert process.poll() is None, "the run ended with the broker down"
        broker.start()
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr[-3000:]
        deadline = time.monotonic() + 15
        stored = read_events(tmp_path / "events.db")
        while len(subscriber.events()) < len(stored) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        end_run(process)
        subscriber.close()
        broker.stop()
    assert time.monotonic() - outage_started > 30
    received = subscriber.events()
    ids = Counter(e["event_id"] for e in received)
    # QoS 1 is at least once: a message the broker forwarded just before it died,
    # whose PUBACK never reached the sink, is sent again. Nothing else may repeat:
    # acknowledged messages are never re-sent, nor the acknowledged parts of an event.
    twice = [i for i, n in ids.items() if n > 1]
    first_seen = {}
    for (topic, payload, _), (_, _, at) in zip(
        subscriber.messages, subscriber.flags, strict=True
    ):
        if "/events/" in topic:
            first_seen.setdefault(json.loads(payload)["event_id"], at)
    in_flight = [
        i for i in twice if outage_started - 1.0 <= first_seen[i] <= outage_started
    ]
    assert twice == in_flight and len(twice) <= 2, (twice, outage_started)
    assert set(ids) == {e["event_id"] for e in stored}
    assert "unavailable" in stderr and "is back after" in stderr
    # in order: each camera's events arrive in the order they were produced
    seqs = [e["seq"] for e in received if e["event_id"] not in twice]
    assert seqs == sorted(seqs)
    for event in received[:50]:
        assert event["stream_id"] == "crowd"
    ins = sum(
        1 for e in stored if e["kind"] == "line_crossing" and e["direction"] == "in"
    )
    outs = sum(
        1 for e in stored if e["kind"] == "line_crossing" and e["direction"] == "out"
    )
    assert ins + outs > 0
    assert subscriber.last("framechain/crowd/mid/in") == str(ins).encode()
    assert subscriber.last("framechain/crowd/mid/out") == str(outs).encode()
    occupancy = [e for e in stored if e["kind"] == "zone_occupancy"][-1]
    assert (
        subscriber.last("framechain/crowd/left/occupancy")
        == str(int(occupancy["value"])).encode()
    )
    assert subscriber.last("framechain/status") == b"offline"  # clean shutdown
    check_discovery(subscriber)


@pytest.mark.slow
def test_a_stop_with_the_broker_away_keeps_every_event_spooled(
    tmp_path: Path,
) -> None:
    """SIGTERM while the MQTT broker is unreachable: the chain still ends in order
    (the sink gets every stream's end, then stops retrying rather than waiting out
    its drain deadline), exits 0, and its spool holds every event SQLite stored,
    for the next start to deliver."""
    import signal
    import sqlite3

    sink = {
        "kind": "mqtt",
        "host": "127.0.0.1",
        "port": free_port(),  # nothing listens there
        "spool_dir": str(tmp_path / "spool"),
    }
    process = spawn_run(crowd_config(tmp_path, sink, realtime=True))
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            count = poll_store(tmp_path / "events.db", "SELECT count(*) FROM events")
            if (count or 0) >= 20:
                break
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        end_run(process)
    assert process.returncode == 0, stderr[-3000:]
    for sign in ("drain deadline passed", "did not end within", "Traceback"):
        assert sign not in stderr, stderr[-3000:]
    stored = {e["event_id"] for e in read_events(tmp_path / "events.db")}
    (spool,) = (tmp_path / "spool").glob("*.db")
    with sqlite3.connect(spool) as connection:
        spooled = {row[0] for row in connection.execute("SELECT event_id FROM outbox")}
    assert len(stored) >= 20 and spooled == stored
    assert f"{len(stored)} events stay spooled in" in stderr


def check_discovery(subscriber: Subscriber) -> None:
    """Home Assistant discovery: one config per sensor, retained, with the keys HA
    requires, state topics that the sink publishes, unique ids, one device."""
    with subscriber.lock:
        configs = {
            t: json.loads(p)
            for t, p, _ in subscriber.messages
            if t.startswith("homeassistant/") and t.endswith("/config")
        }
    expected = {
        "homeassistant/sensor/framechain_crowd_mid_in/config",
        "homeassistant/sensor/framechain_crowd_mid_out/config",
        "homeassistant/sensor/framechain_crowd_left_occupancy/config",
        "homeassistant/binary_sensor/framechain_crowd_busy_crowd/config",
    }
    assert set(configs) == expected
    for topic, config in configs.items():
        assert topic.split("/")[2] == config["unique_id"]
        # the current scheme: default_entity_id, with the domain; no object_id
        assert (
            config["default_entity_id"]
            == f"{topic.split('/')[1]}.{topic.split('/')[2]}"
        )
        assert "object_id" not in config
        assert config["state_topic"].startswith("framechain/crowd/")
        assert config["availability_topic"] == "framechain/status"
        assert config["device"]["identifiers"] == ["framechain_crowd"]
        assert config["name"]
    sensor = configs["homeassistant/sensor/framechain_crowd_mid_in/config"]
    assert sensor["state_class"] == "total_increasing"
    occupancy = configs["homeassistant/sensor/framechain_crowd_left_occupancy/config"]
    assert occupancy["state_class"] == "measurement"
    assert subscriber.last(sensor["state_topic"]) is not None


class _FlakyReceiver(BaseHTTPRequestHandler):
    """Drops the first connection without answering, answers 503 to the next
    ``failures - 1``, then stores every event it is given."""

    failures: ClassVar[int] = 4
    requests: ClassVar[list[int]] = []
    events: ClassVar[list[dict[str, Any]]] = []
    authorization: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        attempt = len(self.requests)
        self.requests.append(attempt)
        self.authorization.append(self.headers.get("Authorization", ""))
        if attempt == 0:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if attempt < self.failures:
            self.send_error(503, "busy")
            return
        self.events.extend(json.loads(body)["events"])
        self.send_response(204)
        self.end_headers()


def test_webhook_retries_until_every_event_arrives_once(tmp_path: Path) -> None:
    """The receiver drops the first request and fails the next three: the sink
    backs off and retries, the run ends only once all is delivered, and every event
    in SQLite arrived exactly once, oldest first, with the configured header."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FlakyReceiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sink = {
        "kind": "webhook",
        "url": f"http://127.0.0.1:{server.server_port}/hook",
        "headers": {"Authorization": "Bearer ${HOOK_TOKEN}"},
        "retry_max_s": 2,
        "batch_size": 50,
        "spool_dir": str(tmp_path / "spool"),
    }
    # delivery is under test, not detection: a small input halves the run
    config = crowd_config(tmp_path, sink, realtime=False, imgsz=320)
    try:
        result = framechain(
            "run", str(config), "--no-progress", env_extra={"HOOK_TOKEN": "t0ken"}
        )
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr[-3000:]
    stored = read_events(tmp_path / "events.db")
    received = _FlakyReceiver.events
    ids = Counter(e["event_id"] for e in received)
    assert [i for i, n in ids.items() if n > 1] == []
    assert set(ids) == {e["event_id"] for e in stored}
    assert len(_FlakyReceiver.requests) >= _FlakyReceiver.failures + 1
    assert set(_FlakyReceiver.authorization) == {"Bearer t0ken"}
    assert "t0ken" not in result.stderr + result.stdout
    assert [e["seq"] for e in received] == sorted(e["seq"] for e in received)
    assert "is back after" in result.stderr


def test_a_forwarding_sink_waits_out_its_backoff_on_the_clock(tmp_path: Path) -> None:
    """A far end that refuses is retried after the backoff, not before, then after
    twice that; events stay spooled until it takes them (a fake clock: no sleeping,
    no test that depends on the machine's speed)."""
    from pipeline.clock import FakeClock
    from pipeline.messages import Event
    from pipeline.stage import Received
    from stages.sinks.forward import ForwardingSink, ForwardingSinkConfig

    class Refusing(ForwardingSink):
        """Refuses until ``up``; then takes everything spooled."""

        def __init__(self, clock: FakeClock) -> None:
            config = ForwardingSinkConfig(name="far", spool_dir=str(tmp_path))
            super().__init__(config, ["cam"], "far end", clock)
            self.backoff.jitter = 0.0
            self.tries: list[float] = []
            self.up = False

        def deliver(self) -> None:
            assert self.spool is not None
            self.tries.append(clock.monotonic())
            if not self.up:
                self.failed("refused")
                return
            self.succeeded(self.spool.peek(100))

    clock = FakeClock()
    sink = Refusing(clock)
    sink.setup()
    events = [
        Event(f"cam:r:counts:-1:{i}", "cam", "r", "counts", i, 0.0, 0.0)
        for i in range(3)
    ]
    sink.process([Received("events", e) for e in events])
    assert sink.tries == [0.0] and sink.stats().spooled == 3
    for step in (0.5, 0.4):  # the first delay is 1 s
        clock.advance(step)
        sink.tick(clock.now())
    assert sink.tries == [0.0]
    clock.advance(0.2)
    sink.tick(clock.now())
    assert sink.tries == [0.0, 1.1]
    clock.advance(1.9)  # the second delay is 2 s
    sink.tick(clock.now())
    assert len(sink.tries) == 2
    sink.up = True
    clock.advance(0.2)
    sink.tick(clock.now())
    stats = sink.stats()
    assert len(sink.tries) == 3 and stats.spooled == 0 and stats.delivered == 3
    sink.close()


def test_each_camera_s_last_snapshot_is_a_home_assistant_image_by_url() -> None:
    """Where the API serves snapshots, every event that has one keeps the
    camera's retained snapshot_url topic current, and discovery announces an
    image entity reading its URL from there."""
    from pipeline.messages import Event
    from stages.sinks.mqtt import MqttSink, MqttSinkConfig

    sink = MqttSink(
        MqttSinkConfig(kind="mqtt", host="127.0.0.1"), ["door"], pictures=["door"]
    )
    ((topic, config),) = sink.discovery_messages()
    assert topic == "homeassistant/image/framechain_door_last_event/config"
    assert config["default_entity_id"] == "image.framechain_door_last_event"
    assert config["url_topic"] == "framechain/door/snapshot_url"
    assert config["availability_topic"] == "framechain/status"
    url = "http://edge:9410/api/events/door:mid:line_crossing:3:12/snapshot.jpg"
    event = Event(
        "door:mid:line_crossing:3:12", "door", "mid", "line_crossing", 12, 0.5,
        time.time(), 3, snapshot="/s/door/3.jpg", snapshot_url=url,
    )  # fmt: skip
    assert ("framechain/door/snapshot_url", url.encode(), True) in sink.messages(event)
    bare = Event("door:camera:camera_online:-1:0", "door", "camera",
                 "camera_online", 0, 0.0, time.time())  # fmt: skip
    assert all(not t.endswith("snapshot_url") for t, _, _ in sink.messages(bare))
