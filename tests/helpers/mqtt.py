"""A real mosquitto broker on loopback, and a subscriber that records what it
publishes (tests/test_sinks.py, tests/test_event_kinds.py)."""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from conftest import free_port


class Mosquitto:
    """A real broker on 127.0.0.1 with persistence, so that queued QoS 1 messages
    for a persistent subscriber survive a restart. It runs as this user: started
    as root, mosquitto drops to the ``mosquitto`` user, cannot write into pytest's
    0700 folder, and silently keeps nothing across a restart (an event it had
    acknowledged but not yet forwarded was then lost, failing the outage test
    once). Its log goes to ``mosquitto.log`` beside the config."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            pytest.fail("mosquitto is not installed; run tests/install-system-deps.sh")
        self.binary = binary
        self.port = free_port()
        self.config = folder / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {folder}/\n"
            "max_queued_messages 100000\n"
            f"user {getpass.getuser()}\nlog_dest file {folder}/mosquitto.log\n"
        )
        self.log = folder / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        log = self.log.read_text()[-2000:] if self.log.exists() else "(no log)"
        raise AssertionError(f"mosquitto did not start listening:\n{log}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


class Subscriber:
    """A persistent-session QoS 1 subscriber that records every message."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.flags: list[tuple[bool, int, float]] = []
        self.lock = threading.Lock()
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id="framechain-test-subscriber",
            clean_session=False,
        )
        client.reconnect_delay_set(0.2, 1)
        client.on_connect = lambda c, u, f, rc, p: c.subscribe(
            [("framechain/#", 1), ("homeassistant/#", 1)]
        )
        client.on_message = self._on_message
        client.connect("127.0.0.1", port)
        client.loop_start()
        self.client = client

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self.lock:
            self.messages.append((message.topic, message.payload, message.retain))
            self.flags.append((message.dup, message.mid, time.monotonic()))

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [
                json.loads(payload)
                for topic, payload, _ in self.messages
                if "/events/" in topic
            ]

    def last(self, topic: str) -> bytes | None:
        with self.lock:
            values = [p for t, p, _ in self.messages if t == topic]
        return values[-1] if values else None

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
