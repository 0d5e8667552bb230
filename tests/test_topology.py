"""The chain's wiring comes from the ports the kinds declare: a step kind defined
here, in a module of its own, goes between detect and track with no edit to any
other kind, in the plan and in real ``framechain run`` processes."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import CROWD_LINE, REPO, chain_env, read_events, run_to_end

from framechain.app import builtin_registry
from framechain.plan import build_plan, stage_names
from pipeline.config import load_config
from pipeline.topology import Port, chain_order

STEP_PLUGIN = '''
"""A step kind defined outside framechain: between detect and track, it keeps
the detections at or above a confidence and counts what it dropped."""

from typing import Any

import msgspec
from pydantic import Field

from pipeline.configtypes import StrictModel
from pipeline.detections import Detections
from pipeline.messages import Detected
from pipeline.registry import Instance, Section, StageKind, read_stats
from pipeline.stage import Emit, Stage
from pipeline.stageplan import StagePlan
from pipeline.topology import Port


class KeepConfig(StrictModel):
    at_least: float = Field(gt=0, lt=1, description="Minimum confidence kept.")


class KeepStats(msgspec.Struct, kw_only=True):
    frames: int = 0
    below: int = 0


class KeepStage(Stage):
    max_batch = 16

    def __init__(self, camera: str, at_least: float) -> None:
        self.camera, self.at_least = camera, at_least
        self.counts = KeepStats()

    def serves(self, stream_id: str) -> bool:
        return stream_id == self.camera

    def process(self, batch):
        out = []
        for item in batch:
            message = item.message
            if not isinstance(message, Detected):
                out.append(Emit("detections", message))  # ends, camera status
                continue
            found = Detections.from_parts(
                message.count,
                item.parts,
                masks=message.masks,
                labels=bool(message.labels),
            )
            kept = found[found.confidence >= self.at_least]
            self.counts.frames += 1
            self.counts.below += len(found) - len(kept)
            parts = kept.to_parts()
            if message.pixels:
                parts.append(item.parts[-1])
            changed = msgspec.structs.replace(message, count=len(kept))
            out.append(Emit("detections", changed, parts))
        return out

    def stats(self):
        return self.counts


def _plan(context, instance):
    keep = instance.config.keep

    def build():
        return KeepStage(instance.target, keep.at_least)

    return StagePlan(f"keep.{instance.target}", build)


def _summary(_loaded, _target, stats):
    keep = read_stats(stats, KeepStats)
    return [f"    keep: {keep.frames} frames, {keep.below} detections dropped"]


KIND = StageKind(
    name="keep",
    role="transform",
    scope="camera",
    instances=lambda config: [
        Instance(name, camera)
        for name, camera in config.cameras.items()
        if camera.keep is not None
    ],
    plan=_plan,
    ports=(
        Port("detections", "detections", "in"),
        Port("detections", "detections", "out"),
    ),
    sections=(
        Section("camera", "keep", KeepConfig | None, "Confidence kept.", default=None),
    ),
    summary=_summary,
)


def register(registry):
    registry.register(KIND)
'''


@pytest.fixture
def step_plugin(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "keep_plugin.py").write_text(STEP_PLUGIN)
    sys.path.insert(0, str(tmp_path))
    yield "keep_plugin"
    sys.path.remove(str(tmp_path))
    sys.modules.pop("keep_plugin", None)


def chain(folder: Path, clip: Path, db: str, **camera: object) -> Path:
    cameras = {
        "crowd": {"source": {"kind": "file", "path": str(clip)}, "rules": [CROWD_LINE]}
    }
    cameras["crowd"].update(camera)
    second = {"source": {"kind": "file", "path": str(clip)}}
    config = {
        "plugins": ["keep_plugin"],
        "cameras": {**cameras, "plain": second},
        "detector": {"model": "yolo11n.onnx"},
        "sinks": [{"kind": "sqlite", "path": str(folder / db)}],
    }
    path = folder / f"{db}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_chain_order_follows_the_streams_and_a_step_is_spliced_in(
    tmp_path: Path, assets: Path, step_plugin: str
) -> None:
    registry = builtin_registry()
    registry.load_plugins([step_plugin])
    order = [k.name for k in registry.kinds()]
    assert order.index("detect") < order.index("keep") < order.index("track")
    assert order.index("capture") < order.index("decode") < order.index("detect")
    assert max(order.index("annotate"), order.index("track")) < order.index("sink")
    path = chain(tmp_path, assets / "crowd.mp4", "e.db", keep={"at_least": 0.6})
    loaded = load_config(path, registry, chain_env())
    names = stage_names(loaded)
    assert "keep.crowd" in names and "keep.plain" not in names
    runtime = tmp_path / "run"

    def sockets(name: str) -> set[tuple[str, str, bool, tuple[str, ...]]]:
        plan = build_plan(loaded, name, runtime)
        return {
            (e.port, e.uri.rpartition("/")[2], e.bind, e.aliases)
            for e in plan.endpoints
        }

    # detect reaches the step for crowd and track for plain, by camera
    detect = {s for s in sockets("detect") if s[0] == "detections"}
    assert detect == {
        ("detections", "keep.crowd.in", False, ("detections.crowd",)),
        ("detections", "track.plain.in", False, ("detections.plain",)),
    }
    assert sockets("keep.crowd") == {
        ("detections", "keep.crowd.in", True, ()),
        ("detections", "track.crowd.in", False, ("detections.crowd",)),
    }
    # track acknowledges to decode, not to the step in between
    assert ("acks", "decode.crowd.acks", False, ("acks.crowd",)) in sockets(
        "track.crowd"
    )


def test_a_stream_that_loops_back_without_upstream_is_a_clear_error() -> None:
    from dataclasses import replace

    registry = builtin_registry()
    kinds = registry.kinds()
    looped = [
        replace(k, ports=tuple(replace(p, upstream=False) for p in k.ports))
        for k in kinds
    ]
    with pytest.raises(ValueError, match=r"make a cycle; mark the ports .* upstream"):
        chain_order(looped)
    assert Port("x", "s", "in").bound and not Port("x", "s", "out").bound


@pytest.mark.slow
def test_a_step_defined_in_a_test_runs_between_detect_and_track(
    tmp_path: Path, short_clip: Path
) -> None:
    """The step keeps detections at 0.6 and above: the events are exactly those
    of a chain whose detect keeps 0.6 and above itself (ids and every field but
    the capture time), the camera without the step is untouched, and the step's
    own summary line shows it saw every frame."""
    (tmp_path / "keep_plugin.py").write_text(STEP_PLUGIN)
    env = {**chain_env(), "PYTHONPATH": f"{tmp_path}:{REPO}"}
    stepped = chain(tmp_path, short_clip, "step.db", keep={"at_least": 0.6})
    filtered = chain(tmp_path, short_clip, "filter.db", detect={"confidence": 0.6})
    outputs = {
        config.name: run_to_end(config, env)[0] for config in (stepped, filtered)
    }

    def events(db: str) -> dict[str, dict[str, object]]:
        return {
            e["event_id"]: {k: v for k, v in e.items() if k != "capture_ts"}
            for e in read_events(tmp_path / db)
        }

    got, want = events("step.db"), events("filter.db")
    assert any(e["kind"] == "line_crossing" for e in want.values())
    assert got == want
    assert "keep: 90 frames" in outputs[stepped.name]
    dropped = int(outputs[stepped.name].split("keep: 90 frames, ")[1].split()[0])
    assert dropped > 0


def test_a_stage_stat_named_like_a_runtime_stat_of_another_type_is_one_line() -> None:
    """A plugin's stats field ``dropped`` (an int) over the runtime's per-port
    ``dropped`` made every heartbeat unreadable: the stage now stops with a line
    naming the field, without restarts."""
    import msgspec

    from pipeline.errors import PermanentError
    from pipeline.stageplan import RuntimeStats, merged_stats

    class Clashing(msgspec.Struct):
        dropped: int = 3

    class Fine(msgspec.Struct):
        problem: str = "file cut short"
        frames: int = 7

    merged = merged_stats(RuntimeStats(sent=2), Fine())
    assert (merged["problem"], merged["frames"], merged["sent"]) == (
        "file cut short",
        7,
        2,
    )
    with pytest.raises(PermanentError, match=r"Clashing reports dropped, a runtime"):
        merged_stats(RuntimeStats(), Clashing())
