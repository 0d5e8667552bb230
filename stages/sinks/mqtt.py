"""Events to an MQTT broker (paho-mqtt), for Home Assistant, Node-RED and friends.

Topic layout (``prefix`` defaults to ``framechain``; documented in docs/events.md):

- ``<prefix>/<camera>/events/<kind>``: every event as JSON, QoS 1, not retained.
- retained state topics, as each event kind registers them (``StateTopic``):
- ``<prefix>/<camera>/<rule>/in`` and ``.../out``: a line's running totals, retained.
- ``<prefix>/<camera>/<rule>/occupancy``: a zone's current occupancy, retained.
- ``<prefix>/<camera>/<rule>/crowd``: ``ON`` / ``OFF`` for a crowd rule, retained.
- ``<prefix>/<camera>/status``: ``online`` / ``offline`` (the camera), retained.
- ``<prefix>/<camera>/snapshot_url``: the URL of the last event's snapshot on the
  HTTP API, retained, when the API and snapshots are on.
- ``<prefix>/status``: ``online`` / ``offline`` (this sink; the broker publishes
  ``offline`` as our last will), retained; the availability topic of every sensor.
- ``<discovery_prefix>/sensor|binary_sensor/framechain_<camera>_<rule>_<what>/config``:
  Home Assistant MQTT discovery for every state topic with an entity, retained
  (``default_entity_id``, the scheme that replaced ``object_id``), and
  ``<discovery_prefix>/image/framechain_<camera>_last_event/config``: an image
  entity showing the last event's snapshot, by its URL.

Delivery: every event is spooled to disk first and removed only once the broker has
acknowledged (PUBACK) every message it produced, in order. Each connection uses a
fresh client with a clean session, so nothing but the spool ever re-sends: an event
is published again only when the broker went away before acknowledging it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal

import msgspec
from pydantic import Field

from pipeline.configtypes import ConfigPath, EnvStr, SecretRef
from pipeline.eventkinds import EventKindSpec
from pipeline.messages import Event
from stages.sinks.forward import ForwardingSink, ForwardingSinkConfig

log = logging.getLogger(__name__)

SNAPSHOT_URL = "snapshot_url"
"""The retained topic under each camera with its last event's snapshot URL."""


class MqttSinkConfig(ForwardingSinkConfig):
    kind: Literal["mqtt"] = Field(description="MQTT broker (QoS 1, disk spool).")
    name: str = Field(
        default="mqtt",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Sink name, unique among sinks.",
    )
    host: EnvStr = Field(description="Broker host name or address.")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker port.")
    username: EnvStr | None = Field(default=None, description="Broker user.")
    password: SecretRef | None = Field(
        default=None, description="Broker password, as ${ENV} or a credential file."
    )
    tls: bool = Field(default=False, description="Connect with TLS.")
    ca_file: ConfigPath | None = Field(
        default=None, description="CA bundle for TLS; the system's when omitted."
    )
    client_id: str | None = Field(
        default=None, description="MQTT client id; framechain-<sink> when omitted."
    )
    topic_prefix: str = Field(
        default="framechain",
        pattern=r"^[^#+]+$",
        description="First level of every topic.",
    )
    discovery: bool = Field(
        default=True, description="Publish Home Assistant discovery configs."
    )
    discovery_prefix: str = Field(
        default="homeassistant", description="Home Assistant discovery prefix."
    )
    keepalive_s: int = Field(default=30, ge=5, le=3600, description="MQTT keepalive.")
    max_inflight: int = Field(
        default=64, ge=1, le=1000, description="Unacknowledged events at most."
    )

    def target(self) -> str:
        """Where events go, for the run summary."""
        return f"mqtt://{self.host}:{self.port}/{self.topic_prefix}"


class _Connection:
    """One paho client, one network session. Callbacks run on paho's thread and
    only touch this object's fields, under its lock."""

    def __init__(self, config: MqttSinkConfig, client_id: str, status_topic: str):
        import paho.mqtt.client as mqtt

        self.lock = threading.Lock()
        self.state: Literal["connecting", "up", "down"] = "connecting"
        self.reason = ""
        self.acked: set[int] = set()
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=True,
            reconnect_on_failure=False,
        )
        client.max_inflight_messages_set(config.max_inflight * 8)
        client.max_queued_messages_set(0)
        if config.username is not None:
            password = config.password.get_secret_value() if config.password else None
            client.username_pw_set(config.username, password)
        if config.tls:
            client.tls_set(ca_certs=config.ca_file)
        client.will_set(status_topic, "offline", qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_connect_fail = self._on_connect_fail
        self.client = client
        try:
            client.connect_async(config.host, config.port, config.keepalive_s)
            client.loop_start()
        except (OSError, ValueError) as e:
            self.state, self.reason = "down", str(e)

    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        with self.lock:
            if reason.is_failure:
                self.state, self.reason = "down", str(reason)
            else:
                self.state = "up"

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        with self.lock:
            self.state, self.reason = "down", "connection refused or unreachable"

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        with self.lock:
            self.state = "down"
            self.reason = str(reason) if reason is not None else "connection lost"

    def _on_publish(
        self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any
    ) -> None:
        with self.lock:
            self.acked.add(mid)

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


class MqttSink(ForwardingSink):
    def __init__(
        self,
        config: MqttSinkConfig,
        streams: Sequence[str],
        kinds: Sequence[EventKindSpec] = (),
        rules: Mapping[str, Sequence[tuple[str, Sequence[EventKindSpec]]]]
        | None = None,
        pictures: Collection[str] = (),
    ) -> None:
        """``kinds``: the registered event kinds (their state topics); ``rules``:
        per camera, each rule's name and event kinds, for discovery;
        ``pictures``: the cameras whose events carry snapshot URLs."""
        super().__init__(config, streams, f"MQTT broker {config.host}:{config.port}")
        self.config = config
        self.kinds = {spec.name: spec for spec in kinds}
        self.rules = rules or {}
        self.pictures = tuple(pictures)
        self.prefix = config.topic_prefix.rstrip("/")
        self.status_topic = f"{self.prefix}/status"
        self._connection: _Connection | None = None
        self._connect_started = 0.0
        # spool position -> (event, message id -> index of its messages not yet
        # acknowledged), in publish order
        self._inflight: dict[int, tuple[Event, dict[int, int]]] = {}
        # spool position -> indices of its messages to send again after a reconnect
        self._resend: dict[int, set[int]] = {}
        self._last_position = 0
        self._encoder = msgspec.json.Encoder()

    def deliver(self) -> None:
        connection = self._connection
        now = self.clock.monotonic()
        if connection is None:
            self._connection = _Connection(
                self.config,
                self.config.client_id or f"framechain-{self.config.name}",
                self.status_topic,
            )
            self._connect_started = now
            return
        with connection.lock:
            state, reason = connection.state, connection.reason
            acked, connection.acked = connection.acked, set()
        # acknowledgements that arrived before a disconnect still count: only what
        # the broker never acknowledged is sent again
        self._collect(acked)
        if state == "connecting":
            if now - self._connect_started > 10:
                self._drop_connection("connect timed out")
            return
        if state == "down":
            self._drop_connection(reason or "refused")
            return
        if self._connect_started:  # first pass on a new session
            self._connect_started = 0.0
            self._announce()
        self._publish_more()

    def _drop_connection(self, reason: str) -> None:
        if self._connection is not None:
            self._connection.close()
        self._connection = None
        # the spool re-sends what was not acknowledged, and of an event only the
        # messages the broker did not acknowledge
        for position, (_, pending) in self._inflight.items():
            self._resend[position] = set(pending.values())
        self._inflight.clear()
        self._last_position = 0
        self.failed(reason)

    def _collect(self, acked: set[int]) -> None:
        """Remove from the spool the oldest events whose messages are all acked
        (in order: a later event waits for an earlier one)."""
        for _, pending in self._inflight.values():
            for mid in acked & pending.keys():
                del pending[mid]
        done = []
        for position, (event, pending) in self._inflight.items():
            if pending:
                break
            done.append((position, event))
        for position, _ in done:
            del self._inflight[position]
        if done:
            self.succeeded(done)

    def _publish_more(self) -> None:
        assert self.spool is not None and self._connection is not None
        room = self.config.max_inflight - len(self._inflight)
        if room <= 0:
            return
        client = self._connection.client
        for position, event in self.spool.peek(room, self._last_position):
            wanted = self._resend.pop(position, None)
            pending: dict[int, int] = {}
            for index, (topic, payload, retain) in enumerate(self.messages(event)):
                if wanted is not None and index not in wanted:
                    continue  # the broker has this one already
                info = client.publish(topic, payload, qos=1, retain=retain)
                if info.rc != 0:
                    self._resend[position] = (wanted or set()) | set(pending.values())
                    self._drop_connection(f"publish failed (rc {info.rc})")
                    return
                pending[info.mid] = index
            self._inflight[position] = (event, pending)
            self._last_position = position

    def messages(self, event: Event) -> list[tuple[str, bytes, bool]]:
        """The (topic, payload, retained) messages one event produces: the event
        itself, then the retained state topics its kind keeps current."""
        camera = f"{self.prefix}/{event.stream_id}"
        body = self._encoder.encode(msgspec.structs.asdict(event))
        out = [(f"{camera}/events/{event.kind}", body, False)]
        spec = self.kinds.get(event.kind)
        for state in spec.states if spec is not None else ():
            value = state.value(event)
            if value is not None:
                out.append((f"{camera}/{state.path(event.rule)}", value.encode(), True))
        if event.snapshot_url:
            out.append((f"{camera}/{SNAPSHOT_URL}", event.snapshot_url.encode(), True))
        return out

    def _announce(self) -> None:
        """On every new session: availability, then discovery configs."""
        assert self._connection is not None
        client = self._connection.client
        client.publish(self.status_topic, "online", qos=1, retain=True)
        if not self.config.discovery:
            return
        for topic, payload in self.discovery_messages():
            client.publish(topic, json.dumps(payload), qos=1, retain=True)

    def discovery_messages(self) -> list[tuple[str, dict[str, Any]]]:
        """Home Assistant MQTT discovery: one entity per retained state topic of
        each rule's event kinds (a line's in and out counters, a zone's
        occupancy, a crowd's binary sensor), and the last event's snapshot as
        an image, grouped in a device per camera."""
        messages: dict[str, tuple[str, dict[str, Any]]] = {}

        def entity(
            camera: str, component: str, unique: str, settings: dict[str, Any]
        ) -> None:
            messages[unique] = (
                f"{self.config.discovery_prefix}/{component}/{unique}/config",
                {
                    "unique_id": unique,
                    "default_entity_id": f"{component}.{unique}",
                    "availability_topic": self.status_topic,
                    "device": {
                        "identifiers": [f"framechain_{camera}"],
                        "name": f"framechain {camera}",
                        "manufacturer": "framechain",
                        "model": "video analytics camera",
                    },
                    **settings,
                },
            )

        for camera, rules in self.rules.items():
            for rule, specs in rules:
                for state in (state for spec in specs for state in spec.states):
                    shown = state.entity
                    if shown is None:
                        continue
                    path = state.path(rule)
                    entity(
                        camera,
                        shown.component,
                        f"framechain_{camera}_{path.replace('/', '_')}",
                        {
                            "state_topic": f"{self.prefix}/{camera}/{path}",
                            **shown.settings,
                            "name": shown.name.replace("{rule}", rule),
                        },
                    )
        for camera in self.pictures:
            entity(
                camera,
                "image",
                f"framechain_{camera}_last_event",
                {
                    "url_topic": f"{self.prefix}/{camera}/{SNAPSHOT_URL}",
                    "content_type": "image/jpeg",
                    "name": "last event",
                },
            )
        return list(messages.values())

    def close(self) -> None:
        if self._connection is not None and self._connection.state == "up":
            try:
                info = self._connection.client.publish(
                    self.status_topic, "offline", qos=1, retain=True
                )
                info.wait_for_publish(1.0)
            except (RuntimeError, ValueError):
                pass
            self._connection.close()
        super().close()
