"""The two pieces recovery rests on, alone: the checkpoint file (atomic, checked,
refused when torn) and the outbox (kept until every sink has stored it, sent again
to a sink that was restarted)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.checkpoint import CheckpointFile, CheckpointHeader
from pipeline.errors import FramechainError
from pipeline.messages import EndOfStream, Event, Mark, Stored, event_id
from pipeline.outbox import Outbox, sink_port


def header(seq: int, outbox: list[bytes] | None = None) -> CheckpointHeader:
    return CheckpointHeader("run", "print", 0, seq, False, outbox or [])


def test_checkpoint_round_trip_replaces_the_file_whole(tmp_path: Path) -> None:
    store = CheckpointFile(tmp_path / "state" / "cam.ckpt")
    assert store.load() is None
    store.save(header(3, [b"a", b"b"]), b"state-3")
    store.save(header(4), b"state-4")
    found = store.load()
    assert found is not None
    assert found.header == header(4) and found.state == b"state-4"
    assert [p.name for p in store.path.parent.iterdir()] == ["cam.ckpt"]
    assert store.writes == 2 and store.last_size == store.path.stat().st_size
    assert os.stat(store.path.parent).st_mode & 0o777 == 0o700


@pytest.mark.parametrize("damage", ["truncate", "flip", "foreign", "empty"])
def test_a_damaged_checkpoint_is_refused(tmp_path: Path, damage: str) -> None:
    store = CheckpointFile(tmp_path / "cam.ckpt")
    store.save(header(7), b"x" * 1000)
    data = bytearray(store.path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[len(data) // 2] ^= 0x40
    elif damage == "foreign":
        data = bytearray(b"PK\x03\x04" + bytes(data[4:]))
    else:
        data = bytearray()
    store.path.write_bytes(bytes(data))
    assert store.load() is None


def test_an_unwritable_state_folder_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    store = CheckpointFile(blocker / "cam.ckpt")
    with pytest.raises(FramechainError, match=r"cannot write checkpoint .*state_dir"):
        store.save(header(0), b"")


def event(seq: int) -> Event:
    return Event(
        event_id("cam", "mid", "line_crossing", 1, seq),
        "cam",
        "mid",
        "line_crossing",
        seq,
        seq / 25,
        0.0,
    )


def sent(emits: list, sink: str) -> list:
    return [e.message for e in emits if e.port == sink_port(sink)]


def answer(outbox: Outbox, sink: str, session: int, mark: Mark) -> list:
    return outbox.stored(Stored(sink, session, "cam", mark.origin, mark.token))


def test_outbox_keeps_events_until_every_sink_stored_them() -> None:
    outbox = Outbox("cam", ["db", "mqtt"], origin=9)
    emits = outbox.add([event(1), event(2)])
    # sinks not heard from yet get nothing now: their first answer brings it all
    assert sent(emits, "db") == sent(emits, "mqtt") == []
    (mark, _) = [e.message for e in outbox.mark(0.0)]
    # first answers: new sessions, which get the outbox and a mark above it
    again = answer(outbox, "db", 1, mark) + answer(outbox, "mqtt", 2, mark)
    assert sent(again, "db")[:2] == [event(1), event(2)]
    floor_db = sent(again, "db")[-1]
    floor_mqtt = sent(again, "mqtt")[-1]
    assert answer(outbox, "db", 1, mark) == [] and len(outbox) == 2  # below floor
    answer(outbox, "db", 1, floor_db)
    assert len(outbox) == 2  # mqtt has not stored them yet
    answer(outbox, "mqtt", 2, floor_mqtt)
    assert len(outbox) == 0 and outbox.all_stored()


def test_a_restarted_sink_gets_everything_not_stored_and_the_end_again() -> None:
    outbox = Outbox("cam", ["db"], origin=9)
    outbox.add([event(1)])
    (mark,) = [e.message for e in outbox.mark(0.0)]
    (floor,) = [
        m for m in sent(answer(outbox, "db", 1, mark), "db") if isinstance(m, Mark)
    ]
    answer(outbox, "db", 1, floor)
    assert len(outbox) == 0
    end = EndOfStream("cam", 2, "eof", 2)
    assert sent(outbox.add([event(2), end]), "db") == [event(2), end]
    # the sink dies before storing event 2; its successor answers the next mark
    (mark,) = [e.message for e in outbox.mark(1.0)]
    resent = sent(answer(outbox, "db", 2, mark), "db")
    assert resent[:2] == [event(2), end] and isinstance(resent[2], Mark)
    assert outbox.resent == 1 + 2  # event 1 to the first session, then these
    # marks of another track process (a predecessor's) are not answers to ours
    stray = Stored("db", 2, "cam", 8, resent[2].token)
    assert outbox.stored(stray) == [] and len(outbox) == 2
    answer(outbox, "db", 2, resent[2])
    assert outbox.all_stored()
    # stored and trimmed, the end still goes to a sink restarted after it
    (mark,) = [e.message for e in outbox.mark(2.0)]
    assert sent(answer(outbox, "db", 3, mark), "db")[0] == end


def test_a_sink_that_is_not_restarted_gets_every_event_once() -> None:
    """Events before the sink's first answer, between answers and after them:
    each reaches the sink exactly once (a resend is for a new session only)."""
    outbox = Outbox("cam", ["db"], origin=9)
    got = sent(outbox.add([event(1), event(2)]), "db")
    (mark,) = [e.message for e in outbox.mark(0.0)]
    got += sent(outbox.add([event(3)]), "db")
    got += sent(answer(outbox, "db", 1, mark), "db")
    got += sent(outbox.add([event(4)]), "db")
    (mark,) = [e.message for e in outbox.mark(1.0)]
    got += sent(answer(outbox, "db", 1, mark), "db")
    events = [m for m in got if not isinstance(m, Mark)]
    assert events == [event(1), event(2), event(3), event(4)]
    assert outbox.all_stored()


def test_restored_outbox_of_a_stream_started_over_keeps_only_events() -> None:
    previous = Outbox("cam", ["db"], origin=1)
    previous.add([event(5), EndOfStream("cam", 6, "eof", 6)])
    fresh = Outbox("cam", ["db"], origin=2)
    fresh.restore(previous.encoded(), events_only=True)
    assert [m for _, m, _ in fresh.entries] == [event(5)] and fresh.end is None
    resumed = Outbox("cam", ["db"], origin=3)
    resumed.restore(previous.encoded())
    assert len(resumed) == 2 and resumed.end is not None


def test_an_outbox_that_is_not_answered_keeps_nothing() -> None:
    outbox = Outbox("cam", ["sink"], origin=1, keep=False)
    assert sent(outbox.add([event(1)]), "sink") == [event(1)]
    assert len(outbox) == 0
