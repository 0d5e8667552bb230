"""Stages as plain objects: no sockets, no processes, driven the way the runtime
drives them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.messages import Ack, EndOfStream, Frame, Packet
from pipeline.stage import Received
from stages.capture import CaptureStage, FileSourceConfig
from stages.decode import DecodeConfig, DecodeStage


def packets(clip: Path) -> list[Received]:
    capture = CaptureStage("cam", FileSourceConfig(kind="file", path=str(clip)))
    capture.setup()
    out: list[Received] = []
    while not capture.finished():
        out += [Received("packets", e.message, e.parts) for e in capture.produce()]
    capture.close()
    assert isinstance(out[-1].message, EndOfStream)
    assert all(isinstance(r.message, Packet) for r in out[:-1])
    return out


def drain(decode: DecodeStage, inputs: list[Received]) -> list[Frame | EndOfStream]:
    """Feed packets while decode accepts them, acknowledging everything it sends."""
    sent: list[Frame | EndOfStream] = []
    queue = list(inputs)
    while not decode.finished():
        if queue and decode.accepts("packets"):
            emits = decode.process([queue.pop(0)])
        else:
            last = sent[-1].seq if sent else -1
            emits = decode.process([Received("acks", Ack("cam", last))])
        for emit in emits:
            sent.append(emit.message)
            assert len(decode._outstanding) <= decode.config.window
    return sent


@pytest.mark.parametrize(
    ("config", "frames", "shape"),
    [
        (DecodeConfig(), 480, (360, 640)),
        (DecodeConfig(every_nth=3), 160, (360, 640)),
        (DecodeConfig(target_fps=6.0), 120, (360, 640)),
        (DecodeConfig(resize=(320, 180), window=2), 480, (180, 320)),
    ],
)
def test_decode_sampling_resize_and_window(assets: Path, config, frames, shape) -> None:
    """Every-Nth and target-fps sampling keep the expected frames, resize applies,
    sequence numbers have no gaps, and no more than ``window`` frames are ever
    unacknowledged."""
    decode = DecodeStage("cam", config, ring_prefix=None)
    sent = drain(decode, packets(assets / "traffic.mp4"))
    decode.close()
    video = [m for m in sent if isinstance(m, Frame)]
    assert abs(len(video) - frames) <= 1
    assert [m.seq for m in sent] == list(range(len(sent)))
    assert isinstance(sent[-1], EndOfStream)
    assert (video[0].height, video[0].width) == shape
    assert video[-1].pts > 19.0  # the whole 20 s clip


def test_decode_resends_unacknowledged_frames(assets: Path) -> None:
    """With no acknowledgement for resend_after_s, the frames in flight are sent
    again, in order, with the same sequence numbers."""
    decode = DecodeStage(
        "cam", DecodeConfig(window=4, resend_after_s=0.01), ring_prefix=None
    )
    sent = []
    for item in packets(assets / "traffic.mp4")[:20]:
        if decode.accepts("packets"):
            sent += [e.message.seq for e in decode.process([item])]
    assert sent == [0, 1, 2, 3]
    import time

    time.sleep(0.02)
    again = [e.message.seq for e in decode.tick(time.time())]
    assert again == [0, 1, 2, 3]
    assert decode.stats()["resent"] == 4
    decode.close()


def test_decoded_pixels_match_pyav(assets: Path) -> None:
    """Frames decoded from relayed packets equal PyAV's own decode of the file."""
    import av

    decode = DecodeStage("cam", DecodeConfig(window=1), ring_prefix=None)
    first = None
    for item in packets(assets / "traffic.mp4"):
        emits = decode.process([item])
        if emits:
            first = emits[0]
            break
    assert first is not None
    with av.open(str(assets / "traffic.mp4")) as container:
        expected = next(container.decode(video=0)).to_ndarray(format="bgr24")
    got = np.frombuffer(first.parts[0], np.uint8).reshape(expected.shape)
    assert np.array_equal(got, expected)
    decode.close()
