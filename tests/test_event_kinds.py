"""The event vocabulary is open: a rule kind defined here, in a module of its own,
registers its own event kind, and real ``framechain run`` processes carry its
events to SQLite, JSON Lines and an MQTT broker with their data intact, with no
edit anywhere else. The schema, the store's views, the retained topics, the Home
Assistant entities and the report follow the registration."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from conftest import REPO, chain_env, framechain, read_events, run_to_end, wait_until
from helpers.mqtt import Mosquitto, Subscriber

RULE_PLUGIN = '''
"""A rule kind defined outside framechain: an event the first time each track
is seen, with where it was and how many tracks the rule has seen so far."""

from typing import Literal

import msgspec
from pydantic import Field

from pipeline.eventkinds import EventKindSpec, HomeAssistantEntity, StateTopic
from stages.track.rules import Rule, RuleConfig, register_rule


class AppearConfig(RuleConfig):
    kind: Literal["appear"] = Field(description="First sight of each track.")


class AppearedData(msgspec.Struct, frozen=True):
    """Where a track was first seen."""

    at_pts: float
    box: tuple[float, float, float, float]
    seen: int


class AppearState(msgspec.Struct, frozen=True):
    seen: list[int]


def _seen(event):
    return str(event.data["seen"])


APPEARED = EventKindSpec(
    "track_appeared",
    AppearedData,
    "A track was seen for the first time.",
    value="Tracks the rule has seen so far.",
    tracked=True,
    states=(
        StateTopic(
            "{rule}/seen",
            _seen,
            HomeAssistantEntity(
                "sensor", "{rule} seen", {"state_class": "total_increasing"}
            ),
        ),
    ),
    report="count",
)


class AppearRule(Rule):
    config_type = AppearConfig
    state_type = AppearState
    events = (APPEARED,)

    def __init__(self, config, lost_track_s):
        super().__init__(config, lost_track_s)
        self.seen = set()

    def evaluate(self, context, frame, subset, anchors, ids):
        events = []
        for i, track_id in enumerate(ids.tolist()):
            if track_id in self.seen:
                continue
            self.seen.add(track_id)
            box = tuple(round(float(v), 1) for v in subset.xyxy[i])
            data = AppearedData(round(frame.pts, 3), box, len(self.seen))
            events.append(
                context.event(
                    frame,
                    self.config,
                    "track_appeared",
                    data,
                    track_id=track_id,
                    class_id=int(subset.class_id[i]),
                    value=float(len(self.seen)),
                )
            )
        return events

    def snapshot(self):
        return AppearState(sorted(self.seen))

    def restore(self, saved):
        self.seen = set(saved.seen)


def register(registry):
    register_rule(registry, AppearRule)
'''


@pytest.fixture
def rule_plugin(tmp_path: Path) -> dict[str, str]:
    """The plugin module on the path of the run's processes."""
    (tmp_path / "appear_plugin.py").write_text(RULE_PLUGIN)
    return {**chain_env(), "PYTHONPATH": f"{tmp_path}:{REPO}"}


def _config(tmp: Path, clip: Path, sinks: list[dict[str, Any]]) -> Path:
    config = {
        "plugins": ["appear_plugin"],
        "cameras": {
            "crowd": {
                "source": {"kind": "file", "path": str(clip)},
                "rules": [{"kind": "appear", "name": "arrivals"}],
            }
        },
        "detector": {"model": "yolo11n.onnx"},
        "sinks": [
            {"kind": "sqlite", "path": str(tmp / "events.db")},
            {"kind": "jsonl", "path": str(tmp / "events.jsonl")},
            *sinks,
        ],
    }
    path = tmp / "appear.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.slow
def test_a_rule_kind_with_its_own_event_kind_reaches_every_sink(
    tmp_path: Path, short_clip: Path, rule_plugin: dict[str, str]
) -> None:
    broker = Mosquitto(tmp_path)
    broker.start()
    subscriber = Subscriber(broker.port)
    try:
        mqtt = {"kind": "mqtt", "host": "127.0.0.1", "port": broker.port}
        config = _config(tmp_path, short_clip, [mqtt])
        stdout, stderr = run_to_end(config, rule_plugin)
        stored = [
            {**e, "data": json.loads(e["data"])}
            for e in read_events(tmp_path / "events.db")
        ]
        appeared = [e for e in stored if e["kind"] == "track_appeared"]
        assert len(appeared) >= 5, stdout
        wait_until(lambda: len(subscriber.events()) >= len(stored), 30, "MQTT events")
        published = {e["event_id"]: e for e in subscriber.events()}
        retained = subscriber.last("framechain/crowd/arrivals/seen")
        discovery = subscriber.last(
            "homeassistant/sensor/framechain_crowd_arrivals_seen/config"
        )
    finally:
        subscriber.close()
        broker.stop()
    assert "could not be decoded" not in stderr

    # SQLite: the data as the rule built it; JSON Lines and MQTT: the same events
    ordered = sorted(appeared, key=lambda e: e["data"]["seen"])
    assert [e["data"]["seen"] for e in ordered] == list(range(1, len(ordered) + 1))
    assert [e["seq"] for e in ordered] == sorted(e["seq"] for e in ordered)
    assert len({e["track_id"] for e in ordered}) == len(ordered)
    for event in ordered:
        data = event["data"]
        assert set(data) == {"at_pts", "box", "seen"}
        assert data["at_pts"] == round(event["pts"], 3)
        x1, y1, x2, y2 = data["box"]
        assert 0 <= x1 < x2 and 0 <= y1 < y2
        assert event["track_id"] >= 0 and event["value"] == data["seen"]
        assert event["event_id"].startswith("crowd:arrivals:track_appeared:")
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").open()]
    assert {e["event_id"]: e for e in lines} == {e["event_id"]: e for e in stored}
    for event in appeared:
        assert published[event["event_id"]] == event

    # the retained running total and its Home Assistant entity
    assert retained == str(len(appeared)).encode()
    assert discovery is not None
    entity = json.loads(discovery)
    assert entity["name"] == "arrivals seen"
    assert entity["state_topic"] == "framechain/crowd/arrivals/seen"
    assert entity["state_class"] == "total_increasing"

    # the store's view of the kind: each data field a column
    with sqlite3.connect(tmp_path / "events.db") as db:
        view = db.execute(
            "SELECT event_id, at_pts, seen, box FROM events_track_appeared"
        ).fetchall()
    assert {(r[0], r[1], r[2], json.dumps(json.loads(r[3]))) for r in view} == {
        (
            e["event_id"],
            e["data"]["at_pts"],
            e["data"]["seen"],
            json.dumps(e["data"]["box"]),
        )
        for e in appeared
    }

    # the schema of this config names the kind and validates its events, and
    # refuses one whose data is not what the kind registered
    result = framechain("schema", str(config), env_extra=rule_plugin)
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert "AppearedData" in schema["$defs"]
    for event in lines:
        jsonschema.validate(event, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**appeared[0], "data": {"seen": 1}}, schema)

    # the report draws the kind as it registered: counted per bucket
    out = tmp_path / "report.png"
    result = framechain("report", str(config), "--out", str(out), env_extra=rule_plugin)
    assert result.returncode == 0, result.stderr
    assert "1 count series" in result.stdout and out.stat().st_size > 10_000


def test_an_event_kind_is_checked_where_it_is_registered_and_where_it_is_built() -> (
    None
):
    """A kind name that cannot be one, two kinds of one name, data of the wrong
    struct and a kind the rule never registered are each refused with a line
    that says so: none of them reaches a sink as something else."""
    import msgspec

    from framechain.app import builtin_registry
    from pipeline.eventkinds import EventKindSpec
    from pipeline.messages import Frame
    from stages.track.engine import RuleEngine
    from stages.track.rules import BUILTIN_RULES, LineRuleConfig
    from stages.track.rules.base import rule_types

    class Data(msgspec.Struct):
        n: int

    with pytest.raises(ValueError, match="lower-case letters"):
        EventKindSpec("Crossing!", Data, "bad name")
    registry = builtin_registry()
    with pytest.raises(ValueError, match="line_crossing is registered twice"):
        registry.events.add("mine", (EventKindSpec("line_crossing", Data, "mine"),))
    engine = RuleEngine(
        "cam",
        [LineRuleConfig(kind="line", name="door", start=(0, 5), end=(9, 5))],
        rule_types(BUILTIN_RULES),
        lost_track_s=1.0,
    )
    frame = Frame("cam", 0, 0.0, 0.0, 10, 10, 25.0, None)
    rule = engine.rules[0]
    with pytest.raises(TypeError, match="not registered; list it in the rule"):
        engine.event(frame, rule, "line_crosing", Data(1))
    with pytest.raises(TypeError, match="carries LineCrossingData data, not Data"):
        engine.event(frame, rule, "line_crossing", Data(1))


def test_the_schema_command_needs_no_config() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "framechain.cli", "schema"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == (REPO / "docs" / "event.schema.json").read_text()
