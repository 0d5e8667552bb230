"""Decode: compressed packets to BGR frames, sampled and resized, handed on in
shared memory (one host) or inline (tcp).

Decode is the head of its stream's delivery protocol (``pipeline.delivery``): every
frame it sends is held until the track stage acknowledges it (after checkpointing
it), never more than a window at a time, and re-sent when acknowledgements stop
or when a restarted track asks for them (``Resume``).

A file source's frames are numbered alike in every run (epoch 0): a decode
restarted mid-file waits for the track's ``Resume``, decodes the file again from
its start (its capture restarts with it) and sends from the frame the track needs.
A live source's frames are numbered per decode process (epoch: its start in ms).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import msgspec

from pipeline.clock import Clock, WallClock
from pipeline.delivery import DeliveryWindow
from pipeline.errors import FramechainError
from pipeline.messages import (
    Ack,
    EndOfStream,
    Frame,
    Packet,
    Resume,
    StreamStatus,
    Timing,
)
from pipeline.metrics import FrameAges
from pipeline.shm import StreamRings
from pipeline.stage import Emit, Received, Stage
from pipeline.transport import Buffer
from stages.decode.config import DecodeConfig
from stages.decode.convert import MICROS, BgrConverter, Sampler, motion_gate
from stages.decode.decoder import Decoded, PacketDecoder
from stages.decode.stats import COUNTERS, DecodeStats, decode_problem
from stages.detect.letterbox import ModelInput

log = logging.getLogger(__name__)

Phase = Literal["starting", "decoding", "ending", "ended", "done"]
"""Where a decode process is in its stream: ``starting``, no packet yet (file or
live is not known); ``decoding``; ``ending``, the source ended (or the chain is
stopping) and the frames decoded so far still go out before the end;
``ended``, the end went out and waits for the track's acknowledgement;
``done``, acknowledged: the process exits."""

SourceKind = Literal["file", "live"]
"""A file is read at the chain's pace and never loses a frame; a live source is
read as it comes, and decode drops frames rather than fall behind."""


class DecodeStage(Stage):
    def __init__(
        self,
        stream_id: str,
        config: DecodeConfig,
        ring_prefix: str | None,
        model: ModelInput | None = None,
        clock: Clock | None = None,
        resume_from: int | None = None,
    ) -> None:
        """``model``: the detector input to scale frames for (see BgrConverter).
        ``resume_from``: the first frame of a file source to send; None waits for
        the track stage to say (``Resume``)."""
        self.stream_id = stream_id
        self.config = config
        self.ring_prefix = ring_prefix  # None: pixels travel inline
        self.clock = clock or WallClock()
        self._convert = BgrConverter(config.resize, config.threads, model)
        # decoded frames (av.VideoFrame, capture time) and in-band status, in order
        self._pending: deque[tuple[Any, float] | StreamStatus] = deque()
        self.source: SourceKind = "file"
        self._delivery = DeliveryWindow(
            stream_id,
            self.clock,
            config.window,
            config.live_window,
            config.live_max_age_s,
            config.resend_after_s,
        )
        self._rings: StreamRings | None = None
        self._resume_from = resume_from
        self._live_epoch = int(self.clock.now() * 1000)
        self.epoch = 0  # set from the first packet: a live source's is its own
        self.phase: Phase = "starting"
        self._seq = 0
        self._sampler = Sampler(config.every_nth, config.target_fps)
        self._end_reason = ""  # the source's, or "stopped"
        self._ages = FrameAges(clock=self.clock)
        self._motion = motion_gate(config.motion)
        self.counters = dict.fromkeys(COUNTERS, 0)
        self._decoder = PacketDecoder(
            stream_id, config.threads, self.counters, self.clock
        )

    @property
    def _live(self) -> bool:
        return self.source == "live"

    def _ending(self) -> bool:
        return self.phase in ("ending", "ended", "done")

    # -- flow control ----------------------------------------------------------------
    def serves(self, stream_id: str) -> bool:
        return stream_id == self.stream_id

    def accepts(self, port: str) -> bool:
        if port == "packets" and self._ending():
            return True  # ended: read and drop, so that capture never blocks on us
        if port == "packets" and not self._live:
            return not self._pending and self._delivery.has_room()
        return True  # live sources are always read; decode drops GOPs instead

    def process(self, batch: Sequence[Received]) -> Iterable[Emit]:
        resent: list[Emit] = []
        for item in batch:
            message = item.message
            if isinstance(message, Ack):
                if message.epoch == self.epoch:
                    self._acknowledge(message.seq)
            elif isinstance(message, Resume):
                resent.extend(self._resume(message))
            elif self._ending():
                continue  # stopped before the source's own end arrived
            elif isinstance(message, Packet):
                self._decode(message, item.parts[0] if item.parts else b"")
            elif isinstance(message, StreamStatus):
                self._source_status(message)
            elif isinstance(message, EndOfStream):
                self._flush(message)
        return resent + list(self._send_pending())

    def stop(self) -> Iterable[Emit]:
        """End the stream now: the frames decoded go on, then the end (``stopped``);
        packets still queued are dropped. Decode knows its frames arrived (track
        acknowledges each), so a stopping chain ends here, not at capture: libzmq
        drops what a closing ipc peer had queued (zeromq/libzmq#4660), and the
        packets queued before it would all be decoded and detected first."""
        if not self._ending():
            self._flush(EndOfStream(self.stream_id, self._seq, "stopped", 0))
        return list(self._send_pending())

    def tick(self, now: float) -> Iterable[Emit]:
        if not self._delivery.outstanding:
            return list(self._send_pending())
        return self._delivery.due()

    def _resume(self, resume: Resume) -> list[Emit]:
        """The track needs frame ``resume.seq`` next: the first word a file decode
        waits for, or a restarted track asking for what it lost.

        Raises:
            FramechainError: the track needs a frame this process already let go
                of (its checkpoint is older than its acknowledgements): this decode
                exits and its restart reads the file again from the start.
        """
        if resume.epoch != self.epoch and (self._live or resume.epoch != 0):
            return []  # about another live decode's frames
        if not self._live and self._resume_from is None:
            self._resume_from = resume.seq
            if resume.seq:
                log.info(
                    "%s: resuming at frame %d (decoding up to it again)",
                    self.stream_id,
                    resume.seq,
                )
            return []
        outstanding = self._delivery.outstanding
        first = next(iter(outstanding), self._seq)
        if resume.seq < first and not self._live:
            raise FramechainError(
                f"{self.stream_id}: the track resumed at frame {resume.seq}, but "
                f"frames up to {first - 1} were already acknowledged; starting the "
                "file over"
            )
        return [emit for seq, emit in outstanding.items() if seq >= resume.seq]

    def _acknowledge(self, seq: int) -> None:
        self._delivery.acknowledge(seq)
        if self.phase == "ended" and not self._delivery.outstanding:
            self.phase = "done"

    # -- decoding --------------------------------------------------------------------
    def _latest_only(self) -> None:
        """Live sources only: when the chain is behind, keep the newest decoded
        frames and drop the oldest waiting ones, so latency stays bounded
        without losing whole GOPs to a short hiccup."""
        waiting = [i for i, item in enumerate(self._pending) if isinstance(item, tuple)]
        excess = len(self._delivery) + len(waiting) - self._delivery.limit
        for index in reversed(waiting[: max(0, excess)]):
            del self._pending[index]
            self.counters["frames_dropped_behind"] += 1

    def _decode(self, packet: Packet, payload: Buffer) -> None:
        self._set_source(packet.live)
        if self.phase == "starting":
            self._begin(packet.live)
            if not packet.live and packet.seq != 0:
                # frames are numbered from the file's first: a capture mid-file
                # cannot be joined (the supervisor restarts it with us)
                raise FramechainError(
                    f"{self.stream_id}: capture is at packet {packet.seq} of the "
                    "file; restarting to read it from the start"
                )
        self._keep(self._decoder.decode(packet, payload))

    def _set_source(self, live: bool) -> None:
        self.source = "live" if live else "file"
        self._delivery.live = live

    def _begin(self, live: bool) -> None:
        self.phase = "decoding"
        self._set_source(live)
        self.epoch = self._live_epoch if live else 0

    def _source_status(self, status: StreamStatus) -> None:
        """A live source connected or failed: frames decoded so far go first; a new
        connection starts a new decoder at its first keyframe."""
        if self.phase == "starting":
            self._begin(True)  # only live sources report their state
        self._keep(self._decoder.new_session(status.seq))
        self._pending.append(status)

    def _flush(self, eos: EndOfStream) -> None:
        self._keep(self._decoder.drain())
        self.phase, self._end_reason = "ending", eos.reason

    def _keep(self, frames: Decoded) -> None:
        """Apply sampling and queue the frames that travel on."""
        for frame, capture_ts in frames:
            self.counters["frames_damaged"] += bool(getattr(frame, "is_corrupt", 0))
            if self._sampler.keep(frame, self._decoder.fps):
                self._pending.append((frame, capture_ts))
        if self._live:
            self._latest_only()

    # -- sending ---------------------------------------------------------------------
    def _send_pending(self) -> Iterator[Emit]:
        if not self._live and self._resume_from is None:
            return  # a file source: the track has not said where it is yet
        while self._pending and self._delivery.has_room():
            item = self._pending.popleft()
            if isinstance(item, StreamStatus):
                emit = Emit(
                    "frames",
                    msgspec.structs.replace(item, seq=self._seq, epoch=self.epoch),
                )
            elif not self._live and self._seq < (self._resume_from or 0):
                self._seq += 1  # the track has applied it already
                self.counters["frames_skipped_resume"] += 1
                if self._motion is not None:  # its state must be as in one pass
                    frame, _ = item
                    self._motion.update(self._convert.pixels(frame), self._pts(frame))
                continue
            else:
                emit = self._frame_message(*item)
            self._delivery.sent(self._seq, emit)
            self._seq += 1
            yield emit
        if self.phase == "ending" and not self._pending:
            if self._delivery.has_room():
                eos = EndOfStream(
                    self.stream_id, self._seq, self._end_reason, self._seq, self.epoch
                )
                emit = Emit("frames", eos)
                self._delivery.sent(self._seq, emit)
                self.phase = "ended"
                yield emit

    def _pts(self, frame: Any) -> float:
        if frame.pts is not None:
            return float(frame.pts * MICROS)
        return self._seq / self._decoder.fps

    def _frame_message(self, frame: Any, capture_ts: float) -> Emit:
        started = self.clock.now()
        pixels = self._convert.pixels(frame)
        width, height = self._convert.frame_size(frame)
        pts = self._pts(frame)
        parts: tuple[Any, ...] = ()
        ref = None
        if self.ring_prefix is None:
            parts = (memoryview(pixels.reshape(-1)),)
        else:
            if self._rings is None:
                slots = max(self.config.window, self.config.live_window) + 1
                stem = f"{self.ring_prefix}-{self.stream_id}"
                self._rings = StreamRings(stem, slots)
            ref = self._rings.ring_for(pixels.nbytes).write(pixels)
        message = Frame(
            stream_id=self.stream_id,
            seq=self._seq,
            capture_ts=capture_ts,
            pts=pts,
            width=width,
            height=height,
            fps=self._sampler.fps(self._decoder.fps),
            shm=ref,
            timings=(Timing("decode", started, self.clock.now()),),
            motion=self._motion.update(pixels, pts) if self._motion else True,
            epoch=self.epoch,
            pixel_size=self._convert.pixel_size(frame),
        )
        self._ages.add(capture_ts)
        return Emit("frames", message, parts)

    # -- lifecycle -------------------------------------------------------------------
    def finished(self) -> bool:
        return self.phase == "done"

    def stats(self) -> DecodeStats:
        p50, p99 = self._ages.quantiles()
        return DecodeStats(
            frames=self._seq,
            in_flight=len(self._delivery),
            window=self._delivery.limit,
            resent=self._delivery.resent,
            frame_age_out_p50_s=p50,
            frame_age_out_p99_s=p99,
            problem=decode_problem(
                self.counters, self._decoder.first_error, self._live
            ),
            **self.counters,
            motion_frames_gated=self._motion.gated if self._motion else 0,
        )

    def close(self) -> None:
        if self._rings is not None:
            self._rings.close()
