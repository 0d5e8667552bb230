"""Stages as plain objects: no sockets, no processes, driven the way the runtime
drives them."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.clock import FakeClock
from pipeline.messages import Ack, EndOfStream, Frame, Packet
from pipeline.stage import Received
from stages.capture.file import CaptureStage, FileSourceConfig
from stages.decode.stage import DecodeConfig, DecodeStage


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


def drain(
    decode: DecodeStage, inputs: list[Received], emitted: list[Any] | None = None
) -> list[Frame | EndOfStream]:
    """Feed packets while decode accepts them, acknowledging everything it sends
    (and keeping each ``Emit``, parts too, in ``emitted``)."""
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
            if emitted is not None:
                emitted.append(emit)
            assert decode.stats().in_flight <= decode.config.window
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
    decode = DecodeStage("cam", config, ring_prefix=None, resume_from=0)
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
    again, in order, with the same sequence numbers; not a moment before, and each
    silent re-send waits twice as long (a fake clock, no sleeping)."""
    clock = FakeClock()
    decode = DecodeStage(
        "cam",
        DecodeConfig(window=4, resend_after_s=5.0),
        ring_prefix=None,
        clock=clock,
        resume_from=0,
    )
    sent = []
    for item in packets(assets / "traffic.mp4")[:20]:
        if decode.accepts("packets"):
            sent += [e.message.seq for e in decode.process([item])]
    assert sent == [0, 1, 2, 3]
    clock.advance(4.9)
    assert list(decode.tick(clock.now())) == []
    clock.advance(0.2)
    again = [e.message.seq for e in decode.tick(clock.now())]
    assert again == [0, 1, 2, 3]
    assert decode.stats().resent == 4
    clock.advance(9.9)  # the second wait is 10 s
    assert list(decode.tick(clock.now())) == []
    clock.advance(0.2)
    assert [e.message.seq for e in decode.tick(clock.now())] == [0, 1, 2, 3]
    more = [e.message.seq for e in decode.process([Received("acks", Ack("cam", 1))])]
    clock.advance(5.1)  # an acknowledgement resets the wait to 5 s
    assert [e.message.seq for e in decode.tick(clock.now())] == [2, 3, *more]
    decode.close()


def test_decode_stop_ends_the_stream_at_once(assets: Path) -> None:
    """stop() (a stopping chain's SIGUSR1) ends the stream at decode: the frames
    already sent stay in flight, the end of stream (``stopped``) takes the next
    sequence number, packets still queued from capture, and capture's own end,
    are read and dropped (capture never blocks on a decode that has ended), and
    decode finishes once track has acknowledged the end."""
    decode = DecodeStage("cam", DecodeConfig(window=4), ring_prefix=None, resume_from=0)
    clip = packets(assets / "traffic.mp4")
    sent = []
    for item in clip[:30]:
        if decode.accepts("packets"):
            sent += [e.message for e in decode.process([item])]
    assert [m.seq for m in sent] == [0, 1, 2, 3]
    sent += [e.message for e in decode.stop()]
    for _ in range(10):  # track acknowledges as they come
        if isinstance(sent[-1], EndOfStream):
            break
        ack = Received("acks", Ack("cam", sent[-1].seq - 2))
        sent += [e.message for e in decode.process([ack])]
    end = sent[-1]
    assert isinstance(end, EndOfStream) and end.reason == "stopped", sent
    assert [m.seq for m in sent] == list(range(len(sent)))
    # the frames the decoder still held come out too (B-frame reordering)
    assert all(isinstance(m, Frame) for m in sent[:-1]) and 4 <= end.seq < 10
    assert decode.accepts("packets")
    assert decode.process(clip[30:]) == []  # the rest of the clip and its end
    assert not decode.finished()
    decode.process([Received("acks", Ack("cam", end.seq))])
    assert decode.finished() and list(decode.stop()) == []
    decode.close()


def test_decoded_pixels_match_pyav(assets: Path) -> None:
    """Frames decoded from relayed packets equal PyAV's own decode of the file."""
    import av

    decode = DecodeStage("cam", DecodeConfig(window=1), ring_prefix=None, resume_from=0)
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


def two_sizes_h264(path: Path) -> list[tuple[int, int]]:
    """A raw H.264 stream whose resolution changes mid-stream and back, as a camera's
    does when someone changes its settings: three encodes, each with its own SPS,
    concatenated. Returns the (width, height) of each segment of 12 frames."""
    import av

    sizes = [(320, 240), (480, 272), (320, 240)]
    data = b""
    for n, (width, height) in enumerate(sizes):
        codec = av.CodecContext.create("libx264", "w")
        codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
        codec.time_base = Fraction(1, 25)
        codec.options = {"preset": "ultrafast", "bf": "0"}
        for i in range(12):
            ys, xs = np.mgrid[0:height, 0:width]
            image = np.stack(
                [(xs + 9 * i) % 256, (ys * 2) % 256, np.full_like(xs, 60 * n)], -1
            )
            frame = av.VideoFrame.from_ndarray(image.astype(np.uint8), format="bgr24")
            frame.pts = i
            data += b"".join(bytes(p) for p in codec.encode(frame))
        data += b"".join(bytes(p) for p in codec.encode(None))
    path.write_bytes(data)
    return sizes


@pytest.mark.parametrize("shared_memory", [False, True])
def test_resolution_change_mid_stream(tmp_path: Path, shared_memory: bool) -> None:
    """Decode keeps one colour converter per stream; when the stream's size changes
    mid-way every frame still comes out at its own size with PyAV's own pixels,
    inline and through shared-memory slots sized for the first frames."""
    import uuid

    import av

    from pipeline.shm import RingReader

    clip = tmp_path / "switch.h264"
    sizes = two_sizes_h264(clip)
    with av.open(str(clip)) as container:
        expected = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    assert len(expected) == 36
    prefix = f"fc-test-{uuid.uuid4().hex[:8]}" if shared_memory else None
    decode = DecodeStage(
        "cam", DecodeConfig(window=1), ring_prefix=prefix, resume_from=0
    )
    reader = RingReader()
    got = []
    last = -1
    try:
        queue = packets(clip)
        while not decode.finished():
            if queue and decode.accepts("packets"):
                item = queue.pop(0)
            else:
                item = Received("acks", Ack("cam", last))
            for emit in decode.process([item]):
                last = emit.message.seq
                if isinstance(emit.message, Frame):
                    frame = emit.message
                    shape = (frame.height, frame.width, 3)
                    if frame.shm is not None:
                        pixels = reader.view(frame.shm, shape).copy()
                        reader.verify(frame.shm, shape)
                    else:
                        pixels = np.frombuffer(emit.parts[0], np.uint8).reshape(shape)
                    got.append((frame, pixels))
    finally:
        reader.close()
        decode.close()
    assert [(f.width, f.height) for f, _ in got] == [
        s for s in sizes for _ in range(12)
    ]
    assert all((frame.shm is not None) == shared_memory for frame, _ in got)
    assert all(np.array_equal(p, e) for (_, p), e in zip(got, expected, strict=True))


def tracked_events(confidence: float, pixels: bool = False) -> tuple[list, object]:
    """Drive a track stage with one box walking down across a line, at a given
    detection confidence; returns the events and the stage."""
    from pipeline.detections import Detections
    from pipeline.messages import Detected, Event
    from stages.track.config import TrackerConfig
    from stages.track.rules import LineRuleConfig, ZoneRuleConfig
    from stages.track.stage import TrackStage

    rules = [
        LineRuleConfig(
            kind="line",
            name="door",
            start=(0, 100),
            end=(200, 100),
            low_confidence_below=0.5,
        ),
        ZoneRuleConfig(
            kind="zone", name="all", polygon=[(0, 0), (200, 0), (200, 200), (0, 200)]
        ),
    ]
    tracker = TrackerConfig(high_confidence=0.4)  # lets a 0.45 box start a track
    stage = TrackStage("cam", tracker, rules, annotate=pixels)
    stage.setup()
    events = []
    image = np.full((200, 200, 3), 90, np.uint8)
    for seq in range(30):
        y = 40 + 4 * seq
        detections = Detections(
            np.array([[80, y - 40, 120, y]], np.float32),
            np.array([confidence], np.float32),
            np.array([0], np.int32),
        )
        frame = Frame("cam", seq, 0.0, seq / 10, 200, 200, 10.0, None)
        parts = [*detections.to_parts(), memoryview(image).cast("B")]
        message = Detected(frame, 1, ("person",), pixels=pixels)
        for emit in stage.process([Received("detections", message, parts)]):
            if isinstance(emit.message, Event):
                events.append(emit.message)
            elif emit.port == "annotate":
                events.append(emit)
    return events, stage


@pytest.mark.parametrize(("confidence", "low"), [(0.9, False), (0.45, True)])
def test_events_carry_the_tracks_confidence(confidence: float, low: bool) -> None:
    """Events of a track carry its mean confidence and the low-confidence flag set
    by the rule's threshold; events without a track carry neither."""
    events, _ = tracked_events(confidence)
    crossing = [e for e in events if e.kind == "line_crossing"]
    assert len(crossing) == 1 and crossing[0].direction == "in"
    assert crossing[0].confidence == pytest.approx(confidence, abs=1e-3)
    assert crossing[0].low_confidence is low
    occupancy = [e for e in events if e.kind == "zone_occupancy"]
    assert occupancy and all(
        e.track_id == -1 and not e.low_confidence for e in occupancy
    )


def test_annotate_port_gets_tracked_frames_with_pixels() -> None:
    """With annotation on, every frame goes out on the lossy annotate port with the
    tracker ids, the pixels and the rules' geometry and counts."""
    from pipeline.detections import Detections

    emits, _ = tracked_events(0.9, pixels=True)
    frames = [e for e in emits if not hasattr(e, "kind")]
    assert len(frames) == 30
    last = frames[-1]
    assert last.message.tracked and last.message.pixels
    detections = Detections.from_parts(last.message.count, last.parts, tracked=True)
    assert detections.tracker_id.tolist() == [0]
    assert np.asarray(last.parts[-1]).nbytes == 200 * 200 * 3
    line = last.message.overlay.lines[0]
    assert (line.name, line.count_in, line.count_out) == ("door", 1, 0)
    assert last.message.overlay.zones[0].count == 1


def test_paced_file_is_due_in_decode_order_and_keeps_pace_across_loops(
    assets: Path,
) -> None:
    """A file played like a camera sends packets in decode order at DTS pace, never
    bunched around B-frames, and the second loop continues one frame after the
    first ended instead of bursting."""
    capture = CaptureStage(
        "cam",
        FileSourceConfig(
            kind="file", path=str(assets / "crowd.mp4"), realtime=True, loop=True
        ),
    )
    capture.setup()
    assert capture._packets is not None
    dues = [next(capture._packets)[2] for _ in range(2 * 460 + 10)]
    capture.close()
    steps = np.diff(np.array(dues, np.float64))
    frame = 1001 / 24000
    assert np.all(steps > 0)
    assert np.allclose(steps, frame, atol=1e-3), steps.max()


@pytest.mark.parametrize(("live", "lossy"), [(False, frozenset()), (True, {"packets"})])
def test_a_live_file_drops_like_a_camera(tmp_path: Path, assets: Path, live, lossy):
    """A file played ``live`` gets a lossy capture link and live packets (decode then
    keeps only the newest frames); a plain file keeps backpressure and drops nothing."""
    import yaml

    from framechain.app import load as load_config
    from framechain.plan import build_plan

    source = {"kind": "file", "path": str(assets / "crowd.mp4"), "live": live}
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "models_dir": str(assets),
                "cameras": {"cam": {"source": source}},
                "sinks": [{"kind": "sqlite", "path": str(tmp_path / "e.db")}],
            }
        )
    )
    plan = build_plan(load_config(config), "capture.cam", tmp_path)
    assert plan.lossy_ports == lossy
    capture = plan.build()
    capture.setup()
    first = next(capture._packets)[0]
    capture.close()
    assert first.live is live


def detect_all(assets: Path, **settings: Any) -> list:
    """Twelve real frames through a detect stage (``settings`` of the detector) in
    batches of four, then the end of the stream; returns what it sent, in order."""
    import time

    import av

    from pipeline.detections import Detections
    from stages.detect.stage import CameraDetectConfig, DetectorConfig, DetectStage

    stage = DetectStage(
        DetectorConfig(**settings),
        assets / "yolo11n.onnx",
        {"cam": CameraDetectConfig()},
    )
    stage.setup()
    received = []
    with av.open(str(assets / "crowd.mp4")) as container:
        for seq, frame in enumerate(container.decode(video=0)):
            pixels = frame.to_ndarray(format="bgr24")
            header = Frame(
                "cam", seq, 0.0, seq / 24, pixels.shape[1], pixels.shape[0], 24.0, None
            )
            received.append(Received("frames", header, [pixels.tobytes()]))
            if seq == 11:
                break
    received.append(Received("frames", EndOfStream("cam", 12, "eof", 12)))
    out = []
    for start in range(0, len(received), 4):
        out += stage.process(received[start : start + 4])
    while not stage.finished():
        out += stage.produce()
        time.sleep(0.001)
    streams = stage.stats().streams
    stage.close()
    assert streams == settings.get("streams", streams)
    result = []
    for emit in out:
        if isinstance(emit.message, EndOfStream):
            result.append(("eos", emit.message.seq, None))
        else:
            d = Detections.from_parts(emit.message.count, emit.parts)
            result.append(("frame", emit.message.frame.seq, d.xyxy.round(2).tolist()))
    return result


def test_detect_streams_and_overlap_keep_results_and_order(assets: Path) -> None:
    """Inferring several batches at once (streams, each its own copy of the model)
    and preparing a batch while others are inferred change nothing but speed: the
    same detections, each camera's order kept, the end of stream last."""
    plain = detect_all(assets, streams=1, overlap=False)
    assert [kind for kind, _, _ in plain] == ["frame"] * 12 + ["eos"]
    assert [seq for _, seq, _ in plain] == list(range(13))
    assert sum(len(boxes) for _, _, boxes in plain[:-1]) > 12 * 5  # a crowd
    assert detect_all(assets, streams=1, overlap=True) == plain
    assert detect_all(assets, streams=2, threads=2) == plain
    assert detect_all(assets, streams=3, threads=1, overlap=True) == plain


def test_detector_defaults_follow_the_runtime(assets: Path) -> None:
    """ONNX Runtime on a CPU with two threads: two single-thread sessions, one
    frame per call (docs/benchmarks.md §9, §10); one thread: one session and
    batches of up to 4; settings given in the config win over both."""
    from stages.detect.backends import inference_batch, inference_streams
    from stages.detect.stage import CameraDetectConfig, DetectorConfig, DetectStage

    onnx, pt = assets / "yolo11n.onnx", assets / "yolo11n.pt"
    assert inference_streams(onnx, "cpu", threads=2) == 2
    assert inference_streams(onnx, "cpu", threads=1) == 1
    assert inference_streams(pt, "cpu", threads=2) == 1
    assert inference_batch(onnx, "cpu", streams=2) == 1
    assert inference_batch(onnx, "cpu", streams=1) == 4
    assert inference_batch(pt, "cpu", streams=2) == 4

    def resolved(**settings: Any) -> tuple[int, int]:
        stage = DetectStage(
            DetectorConfig(**settings), onnx, {"cam": CameraDetectConfig()}
        )
        stage.setup()
        try:
            return stage.stats().streams, stage.max_batch
        finally:
            stage.close()

    assert resolved(threads=2) == (2, 1)
    assert resolved(threads=1) == (1, 4)
    assert resolved(threads=2, max_batch=8) == (2, 8)
    assert resolved(threads=2, streams=1) == (1, 4)


def test_frame_age_window_is_time_based() -> None:
    """A start-up spike leaves the reported p99 once it is older than the window,
    however few frames arrived since; a stopped stream keeps its last frame's age."""
    from pipeline.metrics import FrameAges

    ages = FrameAges(window_s=10.0)
    assert ages.report(now=0.0) == {"frame_age_p50_s": 0.0, "frame_age_p99_s": 0.0}
    ages.add(capture_ts=-1.6, now=0.0)  # the first frame waited for warm-up
    for t in range(1, 30):
        ages.add(capture_ts=t - 0.2, now=float(t))
    assert ages.report(now=5.0)["frame_age_p99_s"] == pytest.approx(1.6)
    assert ages.report(now=12.0)["frame_age_p99_s"] == pytest.approx(0.2)
    assert ages.report(now=100.0) == {
        "frame_age_p50_s": pytest.approx(0.2),
        "frame_age_p99_s": pytest.approx(0.2),
    }
