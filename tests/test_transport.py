"""Transport: frames cross processes intact, reused shared-memory slots are detected
and counted (never misread), and queues stay bounded by their high-water marks."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import zmq
from conftest import REPO

from pipeline.errors import MessageError, SlotOverwrittenError
from pipeline.messages import Ack, Frame, decode, encode
from pipeline.shm import FrameRing, RingReader
from pipeline.transport import Endpoint, LinkOptions, make_socket, receive


@pytest.fixture
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.mark.parametrize("link", ["ipc-shm", "tcp-inline"])
def test_1080p_frame_crosses_processes_intact(
    tmp_path: Path, context, link: str
) -> None:
    """A 1080p frame sent by another process arrives bit-exact (sha256), through
    shared memory on ipc:// and inline on tcp:// (pins stride/offset/copy bugs)."""
    if link == "ipc-shm":
        uri, ring = f"ipc://{tmp_path}/frames", f"fc-test-{uuid.uuid4().hex[:8]}"
    else:
        uri, ring = "tcp://127.0.0.1:0", "-"
    pull = make_socket(context, Endpoint("in", zmq.PULL, uri, True, LinkOptions(hwm=2)))
    uri = pull.getsockopt(zmq.LAST_ENDPOINT).decode()
    sender = subprocess.Popen(
        [sys.executable, str(REPO / "tests/helpers/frame_sender.py"), uri, ring],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(REPO)},
    )
    try:
        assert pull.poll(20_000), "no frame arrived"
        message, parts = receive(pull)
        expected = sender.stdout.readline().strip()
        assert isinstance(message, Frame)
        shape = (message.height, message.width, 3)
        if message.shm is not None:
            reader = RingReader()
            pixels = reader.view(message.shm, shape)
            digest = hashlib.sha256(pixels.tobytes()).hexdigest()
            reader.verify(message.shm, shape)
            del pixels
            reader.close()
        else:
            digest = hashlib.sha256(bytes(parts[0])).hexdigest()
        assert digest == expected
    finally:
        sender.communicate("done\n", timeout=20)


def test_overwritten_slot_is_detected_and_counted() -> None:
    """A slot reused before its reader got to it raises and is counted; it is never
    handed out as the newer frame's pixels (Frigate's name-only slots misread)."""
    ring = FrameRing(f"fc-test-{uuid.uuid4().hex[:8]}", 64 * 48 * 3, slots=2)
    reader = RingReader()
    try:
        first = np.full((48, 64, 3), 1, np.uint8)
        ref = ring.write(first)
        ring.write(np.full((48, 64, 3), 2, np.uint8))
        ring.write(np.full((48, 64, 3), 3, np.uint8))  # wraps onto the first slot
        with pytest.raises(SlotOverwrittenError):
            reader.view(ref, first.shape)
        assert reader.misses == 1
    finally:
        reader.close()
        ring.close()


def test_slot_rewritten_during_read_fails_verification() -> None:
    """The second generation check catches a write that raced the reader."""
    ring = FrameRing(f"fc-test-{uuid.uuid4().hex[:8]}", 16 * 16 * 3, slots=1)
    reader = RingReader()
    try:
        ref = ring.write(np.zeros((16, 16, 3), np.uint8))
        view = reader.view(ref, (16, 16, 3))
        assert int(view.sum()) == 0
        ring.write(np.ones((16, 16, 3), np.uint8))
        with pytest.raises(SlotOverwrittenError):
            reader.verify(ref, (16, 16, 3))
        assert reader.misses == 1
        del view
    finally:
        reader.close()
        ring.close()


def test_ring_owner_unlinks_its_segment() -> None:
    from pipeline.shm import shm_directory

    name = f"fc-test-{uuid.uuid4().hex[:8]}"
    ring = FrameRing(name, 100, slots=2)
    assert (shm_directory() / name).exists()
    ring.close()
    assert not (shm_directory() / name).exists()


def test_high_water_marks_bound_the_queue(tmp_path: Path, context) -> None:
    """With a reader that never reads, a sender can queue only about SNDHWM + RCVHWM
    messages before it is refused (no unbounded memory growth)."""
    uri = f"ipc://{tmp_path}/bounded"
    options = LinkOptions(hwm=4)
    pull = make_socket(context, Endpoint("in", zmq.PULL, uri, True, options))
    push = make_socket(context, Endpoint("out", zmq.PUSH, uri, False, options))
    payload = np.zeros(1 << 20, np.uint8)
    accepted = 0
    for _ in range(100):
        try:
            push.send_multipart(
                [encode(Ack("cam", accepted)), payload], zmq.NOBLOCK, copy=False
            )
            accepted += 1
        except zmq.Again:
            if not push.poll(200, zmq.POLLOUT):
                break
    assert 4 <= accepted <= 4 + 4 + 4, accepted  # hwm each side, plus kernel buffers
    assert pull.getsockopt(zmq.RCVHWM) == 4


def test_invalid_header_is_rejected() -> None:
    """Untrusted bytes never become a message object."""
    with pytest.raises(MessageError):
        decode(b"\x93\xa3bad\x01\x02")
    assert decode(encode(Ack("cam", 7))) == Ack("cam", 7)


def test_recording_round_trip_and_cut_short(tmp_path) -> None:
    """A recording gives back every message with its parts, in order; a file cut
    mid-message yields what was whole and then says so in one line."""
    from pipeline.errors import FramechainError
    from pipeline.messages import Ack, EndOfStream
    from pipeline.recording import Recorder, replay

    path = tmp_path / "link.fcrec"
    recorder = Recorder(path)
    recorder.write(Ack("cam", 1), [b"abc", memoryview(bytes(range(256)))])
    recorder.write(EndOfStream("cam", 2, "eof", 2), [])
    recorder.close()
    got = list(replay(path))
    assert got == [
        (Ack("cam", 1), [b"abc", bytes(range(256))]),
        (EndOfStream("cam", 2, "eof", 2), []),
    ]
    path.write_bytes(path.read_bytes()[:-3])
    messages = []
    with pytest.raises(FramechainError, match="cut short"):
        messages.extend(replay(path))
    assert messages == [got[0]]
    (tmp_path / "other").write_bytes(b"not a recording")
    with pytest.raises(FramechainError, match="not a framechain recording"):
        list(replay(tmp_path / "other"))
