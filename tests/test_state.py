"""The track stage's explicit state: a stage resumed from its checkpoint at any
frame gives exactly the events and the state of one that never stopped, and a
checkpoint it cannot read exactly (an older format, a damaged or forged state) is
refused with one line, its undelivered events still delivered."""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import typing
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trackscene

from pipeline.checkpoint import CheckpointFile
from pipeline.state import encode
from stages.track.config import SnapshotConfig, TrackerConfig
from stages.track.recovery import STATE_FORMAT, Recovery, TrackState
from stages.track.rules import BUILTIN_RULES
from stages.track.stage import TrackStage

DATA = Path(__file__).parent / "data"
RUN = "run-1"


def stage(
    checkpoint: Path,
    snapshots: Path | None = None,
    run_id: str = RUN,
    rules: list[Any] | None = None,
    acknowledged: bool = False,
) -> TrackStage:
    recovery = Recovery(
        checkpoint=CheckpointFile(checkpoint),
        fingerprint="scene",
        run_id=run_id,
        acknowledged=acknowledged,
    )
    built = TrackStage(
        "cam",
        TrackerConfig(),
        rules or trackscene.rules(),
        snapshots=None
        if snapshots is None
        else SnapshotConfig(directory=str(snapshots)),
        aggregate_s=1.0,
        recovery=recovery,
    )
    built.setup()
    return built


def state_bytes(track: TrackStage) -> bytes:
    return encode(track.snapshot())


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, bytes]:
    """The scene through one stage that never stops: its events by the frame
    they came from, and its state at the end."""
    folder = tmp_path_factory.mktemp("whole")
    track = stage(folder / "cam.ckpt", folder / "snapshots")
    by_frame = {
        seq: trackscene.drive(track, [seq], pixels=True)
        for seq in range(trackscene.FRAMES)
    }
    return folder, by_frame, state_bytes(track)


def test_the_scene_exercises_every_kind_of_state(whole_run: tuple) -> None:
    _, by_frame, _ = whole_run
    kinds = {e.kind for events in by_frame.values() for e in events}
    assert {
        "line_crossing",
        "zone_enter",
        "zone_exit",
        "zone_occupancy",
        "loitering",
        "crowd_start",
        "crowd_end",
        "counts",
    } <= kinds
    assert any(e.snapshot for events in by_frame.values() for e in events)


@pytest.mark.parametrize("cut", [1, 12, 33, 47, 61, 88, 129])
def test_resumed_at_any_frame_gives_the_same_events_and_state(
    whole_run: tuple, cut: int
) -> None:
    """Frames before ``cut`` go to one process, which dies; a new one resumes
    from its checkpoint and takes the rest: every event after the cut (ids,
    snapshot paths, totals, dwell times) and the final state, byte for byte, are
    those of the stage that never stopped."""
    folder, by_frame, final = whole_run
    checkpoint = folder / f"cut-{cut}.ckpt"
    first = stage(checkpoint, folder / "snapshots")
    trackscene.drive(first, range(cut), pixels=True)
    del first  # killed: only its checkpoint is left
    resumed = stage(checkpoint, folder / "snapshots")
    assert resumed.stats().restored_from == cut - 1
    after = {
        seq: trackscene.drive(resumed, [seq], pixels=True)
        for seq in range(cut, trackscene.FRAMES)
    }
    assert after == {seq: by_frame[seq] for seq in after}
    assert state_bytes(resumed) == final


def test_a_changed_rule_starts_afresh_and_the_others_keep_their_state(
    tmp_path: Path,
) -> None:
    checkpoint = tmp_path / "cam.ckpt"
    first = stage(checkpoint)
    trackscene.drive(first, range(40))
    kept = first.engine.states[1].snapshot()  # the zone
    line, zone, crowd = trackscene.rules()
    moved = line.model_copy(update={"band_px": 5.0})
    resumed = stage(checkpoint, rules=[moved, zone, crowd])
    assert resumed.stats().restored_from == 39
    assert resumed.engine.states[0].snapshot().tracks == {}
    assert resumed.engine.states[1].snapshot() == kept


def one_warning(caplog: pytest.LogCaptureFixture) -> str:
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert "\n" not in message
    return message


def test_a_checkpoint_from_before_explicit_state_is_refused_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``data/track-format0.ckpt`` was written by the code before this format
    (``data/make_old_checkpoint.py``): a pickle of the stage after frame 39 of
    the scene with 12 events not yet stored. It is refused in one line naming
    the file and both formats, the stream starts over, and the 12 events still
    go to the sinks."""
    checkpoint = tmp_path / "cam.ckpt"
    shutil.copy(DATA / "track-format0.ckpt", checkpoint)
    found = CheckpointFile(checkpoint).load()
    assert found is not None
    header = found.header
    # resumable in every other respect: same fingerprint, not ended, a file source
    assert (header.state_format, header.fingerprint, header.ended, header.epoch) == (
        0,
        "scene",
        False,
        0,
    )
    assert header.seq == 39 and len(header.outbox) == 12
    with caplog.at_level(logging.INFO):
        track = stage(checkpoint, run_id="old-run", acknowledged=True)
    message = one_warning(caplog)
    assert str(checkpoint) in message and "format 0" in message
    assert f"reads format {STATE_FORMAT}" in message
    assert track.tracking.next_seq == 0 and track.stats().restored_from == -1
    assert len(track.outbox) == 12
    # and the stream starts over exactly as a fresh stage would
    fresh = stage(tmp_path / "fresh.ckpt", acknowledged=True)
    trackscene.drive(track, range(20))
    trackscene.drive(fresh, range(20))
    assert state_bytes(track) == state_bytes(fresh)


def forged(data: bytes, change: str) -> bytes:
    """``data`` (a TrackState) with one part made not to fit."""
    if change == "garbage":
        return b"\xc1" + data[1:]
    raw = msgspec.msgpack.decode(data)  # untyped: maps and lists
    if change == "short-array":
        tracker = raw["tracking"]["tracker"]
        tracker["covariance"][2] = tracker["covariance"][2][:-8]
    elif change == "tracker-rows":
        tracker = raw["tracking"]["tracker"]
        tracker["ids"][1] = [tracker["ids"][1][0] + 1]
    elif change == "object-array":
        raw["tracking"]["tracker"]["ids"][0] = "|O"
    elif change == "rule-state":  # a rule's state is msgpack inside the state
        raw["engine"]["rules"][0][1] = msgspec.msgpack.encode({"tracks": {1: "x"}})
    elif change == "missing-part":
        del raw["taps"]
    return msgspec.msgpack.encode(raw)


@pytest.mark.parametrize(
    "change",
    [
        "garbage",
        "short-array",
        "tracker-rows",
        "object-array",
        "rule-state",
        "missing-part",
    ],
)
def test_a_state_that_does_not_fit_is_refused_in_one_line(
    tmp_path: Path, change: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A checkpoint of this format whose state does not decode into its structs
    (a damaged disk under a valid checksum, a forged file, a plugin rule's state
    changed shape): one line, the stream starts over, nothing half-restored."""
    checkpoint = tmp_path / "cam.ckpt"
    first = stage(checkpoint)
    trackscene.drive(first, range(40))
    store = CheckpointFile(checkpoint)
    found = store.load()
    assert found is not None
    store.save(found.header, forged(found.state, change))
    with caplog.at_level(logging.INFO):
        track = stage(checkpoint)
    message = one_warning(caplog)
    assert "does not restore" in message and str(checkpoint) in message
    fresh = stage(tmp_path / "fresh.ckpt")
    assert state_bytes(track) == state_bytes(fresh)
    assert track.tracking.next_seq == 0


# The layout of the state structs at each format: a change to any of them fails
# here until STATE_FORMAT is bumped (an older checkpoint would otherwise decode
# into a struct that means something else) and the new layout's hash recorded.
LAYOUT_AT_FORMAT = {1: "fe71a38b81939385"}


def type_name(kind: Any) -> str:
    """``dict[int, TrackSide]``: without modules (a struct that moves keeps its
    layout)."""
    text = re.sub(r"<class '([\w.]+)'>", r"\1", repr(kind))
    return re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", text)


def layout(kind: Any, seen: set[type]) -> list[str]:
    """Each struct reachable from ``kind``: its name, encoding and fields' types."""
    lines: list[str] = []
    for part in typing.get_args(kind) or (kind,):
        if isinstance(part, type) and issubclass(part, msgspec.Struct):
            if part in seen:
                continue
            seen.add(part)
            config = part.__struct_config__
            fields = msgspec.structs.fields(part)
            lines.append(
                f"{part.__qualname__} array_like={config.array_like} "
                + ", ".join(f"{f.name}: {type_name(f.type)}" for f in fields)
            )
            for f in fields:
                lines += layout(f.type, seen)
        elif typing.get_args(part):
            lines += layout(part, seen)
    return lines


def state_layout_hash() -> str:
    seen: set[type] = set()
    lines = layout(TrackState, seen)
    for rule in BUILTIN_RULES:
        lines += layout(rule.state_type, seen)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def test_the_state_format_is_bumped_when_the_state_changes() -> None:
    assert LAYOUT_AT_FORMAT.get(STATE_FORMAT) == state_layout_hash(), (
        f"the state structs changed: bump STATE_FORMAT (now {STATE_FORMAT}) in "
        f"stages/track/recovery.py and record {state_layout_hash()!r} for it"
    )
