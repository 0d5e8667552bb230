"""Track: one process per camera, three plain objects in a row. ``Tracking`` puts
frames in sequence and runs ByteTrack (our vectorised port of the ``trackers``
library's, ``stages.track.bytetrack``); the ``RuleEngine`` turns tracked frames into
events; ``MediaTaps`` redacts, keeps snapshots and hands frames to the annotate stage
over a lossy link, so drawing never slows counting.

After each batch of frames the stage checkpoints its state, with the events not yet
stored by every sink (``pipeline.outbox``), and only then acknowledges the frames
to decode, which holds every frame until then: a track killed at any moment
resumes from its checkpoint with the frames after it sent again, and gives the
same events (``stages.track.recovery``).
"""

from __future__ import annotations

import logging
import os
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pipeline.checkpoint import CheckpointHeader
from pipeline.clock import Clock, WallClock
from pipeline.detections import Detections
from pipeline.errors import FramechainError
from pipeline.eventlinks import EventLinks
from pipeline.messages import (
    Detected,
    EndOfStream,
    Event,
    Frame,
    Message,
    Resume,
    Stored,
    StreamStatus,
)
from pipeline.metrics import FrameAges, Histogram
from pipeline.outbox import Outbox
from pipeline.stage import Emit, Received, Stage
from pipeline.state import StateError, encode
from stages.track.config import PrivacyConfig, SnapshotConfig, TrackerConfig
from stages.track.engine import RuleEngine
from stages.track.preview import PreviewTap
from stages.track.recovery import (
    STATE_FORMAT,
    Recovery,
    StageState,
    TrackState,
    decode_state,
    resumable,
)
from stages.track.rules import BUILTIN_RULES, Rule, RuleConfig
from stages.track.rules.base import rule_types
from stages.track.stats import TrackStats
from stages.track.taps import MediaTaps
from stages.track.tracking import Tracking

log = logging.getLogger(__name__)


OUTBOX_LIMIT = 20000
"""Messages kept for the sinks before the stage stops taking frames (a sink that is
away holds the chain back rather than losing events)."""

RESUME_INTERVAL_S = 1.0


class TrackStage(Stage):
    max_batch = 16  # a batch is checkpointed once: a stage behind catches up cheaper

    def __init__(
        self,
        stream_id: str,
        tracker: TrackerConfig,
        rules: Sequence[RuleConfig],
        load_rules: Callable[[], Sequence[RuleConfig]] | None = None,
        snapshots: SnapshotConfig | None = None,
        aggregate_s: float | None = None,
        annotate: bool = False,
        privacy: PrivacyConfig | None = None,
        kinds: Mapping[type, type[Rule]] | None = None,
        clock: Clock | None = None,
        recovery: Recovery | None = None,
        feed: bool = False,
        preview: PreviewTap | None = None,
        links: EventLinks | None = None,
    ) -> None:
        """``load_rules`` re-reads this camera's rules from the config file (SIGHUP).
        ``feed``: each new event also goes out on the best-effort ``feed`` port,
        to the services beside the chain. ``preview``: small copies of tracked
        frames on the ``preview`` port while the API's viewers want them.
        ``links``: the URLs of events' snapshots and clips on the API.
        ``kinds``: the rule class of each rule config (default: the built-in ones).
        ``clock``: the time frame ages are measured against. ``recovery``: the
        sinks and the checkpoint (default: one sink on port ``events.sink``,
        nothing kept across processes)."""
        self.stream_id = stream_id
        self.clock = clock or WallClock()
        self.load_rules = load_rules
        self.recovery = recovery or Recovery()
        self.feed = feed
        self.outbox = Outbox(
            stream_id,
            self.recovery.sinks,
            random.getrandbits(31) ^ os.getpid(),
            keep=self.recovery.acknowledged,
        )
        self._restored_from = -1
        self._waiting = False
        self._last_input = float("-inf")  # a restarted decode waits for Resume
        self._last_resume = float("-inf")
        self.tracking = Tracking(stream_id, tracker)
        self.taps = MediaTaps(stream_id, snapshots, annotate, privacy, preview)
        self.engine = RuleEngine(
            stream_id,
            rules,
            kinds or rule_types(BUILTIN_RULES),
            tracker.lost_track_s,
            aggregate_s,
            self.taps.snapshot_path if snapshots is not None else None,
            links,
        )
        self._names: tuple[str, ...] = ()
        self._done = False
        self._last_frame: Frame | None = None
        self.counters: dict[str, int] = defaultdict(int)
        self._first_ts = 0.0
        self._last_ts = 0.0
        self._ages = FrameAges(clock=self.clock)
        self._latency = Histogram()

    @property
    def rules(self) -> list[RuleConfig]:
        return self.engine.rules

    def setup(self) -> None:
        self.taps.setup()
        self._restore()

    # -- recovery --------------------------------------------------------------------
    def _restore(self) -> None:
        """Resume from the checkpoint on disk, if there is one to resume from; its
        undelivered events go to the sinks in any case."""
        store = self.recovery.checkpoint
        found = store.load() if store is not None else None
        if store is None or found is None:
            return
        resumed = resumable(self.recovery, found, self.stream_id)
        if resumed:
            try:
                self.restore(decode_state(found.state))
            except StateError as e:
                resumed = False
                log.warning(
                    "%s: the checkpoint %s does not restore (%s): starting the "
                    "stream over (its undelivered events are still delivered)",
                    self.stream_id,
                    store.path,
                    e,
                )
        if not resumed:
            self.outbox.restore(found.header.outbox, events_only=True)
            self.outbox.changed = bool(self.outbox)
            return
        self.outbox.restore(found.header.outbox)
        self._restored_from = found.header.seq
        log.info(
            "%s: resumed from the checkpoint after frame %d (%d events still to store)",
            self.stream_id,
            found.header.seq,
            len(self.outbox),
        )

    def snapshot(self) -> TrackState:
        """Everything the events after the last frame applied depend on."""
        return TrackState(
            self.tracking.snapshot(),
            self.engine.snapshot(),
            self.taps.snapshot(),
            StageState(self._names, self._last_frame, self._done, dict(self.counters)),
        )

    def restore(self, saved: TrackState) -> None:
        """Back to ``saved``, under the current config's tracker and rules.

        Raises:
            StateError: a rule's part does not fit (then nothing of it is kept:
            the engine checks every rule before it changes anything, and
            nothing after it can fail).
        """
        self.engine.restore(saved.engine)
        self.tracking.restore(saved.tracking)
        self.taps.restore(saved.taps)
        stage = saved.stage
        self._names, self._last_frame, self._done = (
            stage.names,
            stage.last_frame,
            stage.done,
        )
        self.counters = defaultdict(int, stage.counters)
        self.taps.set_epoch(self.tracking.epoch)
        self.taps.resolve_classes(self._names)

    def _checkpoint(self) -> None:
        store = self.recovery.checkpoint
        if store is None:
            return
        header = CheckpointHeader(
            run_id=self.recovery.run_id,
            fingerprint=self.recovery.fingerprint,
            epoch=self.tracking.epoch,
            seq=self.tracking.next_seq - 1,
            ended=self._done,
            outbox=self.outbox.encoded(),
            state_format=STATE_FORMAT,
        )
        store.save(header, encode(self.snapshot()))
        self.outbox.changed = False

    def _resume(self) -> Emit:
        """Tell decode which frame comes next."""
        self._last_resume = self.clock.monotonic()
        return Emit(
            "acks",
            Resume(self.stream_id, self.tracking.epoch, self.tracking.next_seq),
        )

    def serves(self, stream_id: str) -> bool:
        return stream_id == self.stream_id

    def accepts(self, port: str) -> bool:
        return port != "detections" or len(self.outbox) < OUTBOX_LIMIT

    def tick(self, now: float) -> Iterable[Emit]:
        emits = self.outbox.tick(self.clock.monotonic())
        quiet = self.clock.monotonic() - self._last_input
        if (
            not self._done
            and min(quiet, self.clock.monotonic() - self._last_resume)
            >= RESUME_INTERVAL_S
        ):
            emits.append(self._resume())
        if self.outbox.changed:
            self._checkpoint()
        return emits

    def reload(self) -> None:
        """New rules from the config file; the tracker and its ids carry on, and a
        rule whose settings did not change keeps its state."""
        if self.load_rules is None:
            return
        try:
            rules = list(self.load_rules())
        except FramechainError as e:
            log.error("rules not reloaded, keeping the current ones: %s", e)
            return
        self.engine.replace_rules(rules)
        self.counters["reloads"] += 1
        log.info("%s: %d rules loaded", self.stream_id, len(rules))

    def process(self, batch: Sequence[Received]) -> Iterable[Emit]:
        emits: list[Emit] = []
        for_sinks: list[Message] = []
        applied = duplicate = ahead = False
        for item in batch:
            message = item.message
            if isinstance(message, Stored):
                emits.extend(self.outbox.stored(message))
                continue
            seq = self.tracking.admit(message)
            self._last_input = self.clock.monotonic()
            if seq is None:
                duplicate |= not self.tracking.ahead
                ahead |= self.tracking.ahead
                self._waiting |= self.tracking.ahead
                continue
            applied, self._waiting = True, False
            if self.tracking.new_epoch:
                for_sinks.extend(self._end_tracks())
                self.taps.set_epoch(self.tracking.epoch)
            if isinstance(message, Detected):
                for_sinks.extend(self._apply(message, item.parts, emits))
            elif isinstance(message, StreamStatus):
                for_sinks.extend(self._status_events(message))
            elif isinstance(message, EndOfStream):
                self._done = True
                self.taps.expire(set())
                for_sinks.extend(self.engine.final_events(message, self._last_frame))
                for_sinks.append(message)
        self.counters["events_emitted"] += sum(isinstance(m, Event) for m in for_sinks)
        emits.extend(self.outbox.add(for_sinks))
        if self.feed:
            emits.extend(Emit("feed", m) for m in for_sinks if isinstance(m, Event))
        if applied:
            # the state after the batch, and the events not yet stored, are on
            # disk before decode may forget a frame of it
            self._checkpoint()
        if applied or duplicate:
            emits.append(Emit("acks", self.tracking.ack(self.tracking.next_seq - 1)))
        if ahead and self.clock.monotonic() - self._last_resume > 0.5:
            emits.append(self._resume())  # a stage between lost frames: re-send
        if for_sinks:
            # only after something new: a mark after an answer would be answered
            # in turn, back and forth; what is older gets the once-a-second mark
            emits.extend(self.outbox.mark(self.clock.monotonic()))
        return emits

    def _end_tracks(self) -> list[Event]:
        """Nothing is carried across an outage or a new epoch: tracks inside zones
        exit (reason ``lost``) and their snapshots are written; the next
        tracker's ids start above every id used so far."""
        self.tracking.reset()
        if self._last_frame is None:
            return []
        events = self.engine.end_tracks(self._last_frame)
        self.taps.expire(set())
        return events

    def _status_events(self, status: StreamStatus) -> list[Event]:
        """camera_online / camera_offline; going offline ends every track."""
        self.counters[f"camera_{status.state}"] += 1
        events = self._end_tracks() if status.state == "offline" else []
        events.append(self.engine.status_event(status))
        return events

    def _apply(
        self, message: Detected, parts: Sequence[Any], emits: list[Emit]
    ) -> list[Event]:
        """The events of one frame; its annotated copy goes on ``emits``."""
        frame = message.frame
        if message.names != self._names:
            self._names = message.names
            self.engine.resolve_classes(message.names)
            self.taps.resolve_classes(message.names)
        self.engine.labels = message.labels
        detections = Detections.from_parts(
            message.count, parts, masks=message.masks, labels=bool(message.labels)
        )
        tracked = self.tracking.track(detections, frame.fps)
        self._last_frame = frame
        pixels = self.taps.pixels(message, parts, detections)
        self.taps.offer(pixels, tracked)
        self._measure(frame)
        events = self.engine.geometry_events(frame) + self.engine.apply(frame, tracked)
        if self.engine.ended:
            self.taps.expire(set(self.engine.tracks))
        if self.taps.annotate and pixels is not None:
            overlay = self.engine.overlay()
            emits.append(self.taps.annotated(message, tracked, pixels, overlay))
        emits.extend(self.taps.preview(message, parts, tracked, self.engine.overlay))
        return events

    def _measure(self, frame: Frame) -> None:
        now = self.clock.now()
        if not self._first_ts:
            self._first_ts = now
        self._last_ts = now
        self._ages.add(frame.capture_ts, now)
        self._latency.observe(now - frame.capture_ts)
        self.counters["frames"] += 1

    def finished(self) -> bool:
        """The stream's end is applied and every sink has stored everything. The
        process still stays up until stopped: a sink restarted now must still be
        sent the end of stream."""
        return self._done and self.outbox.all_stored()

    def progress(self) -> tuple[int, bool]:
        """Frames applied; waiting while frames after a gap came and the gap did
        not fill."""
        return self.tracking.next_seq, self._waiting

    def stats(self) -> TrackStats:
        frames = self.counters["frames"]
        elapsed = self._last_ts - self._first_ts
        p50, p99 = self._ages.quantiles()
        store = self.recovery.checkpoint
        return TrackStats(
            **self.counters,
            **self.tracking.counters,
            **self.taps.stats(),
            next_seq=self.tracking.next_seq,
            restored_from=self._restored_from,
            checkpoints=store.writes if store else 0,
            checkpoint_bytes=store.last_size if store else 0,
            checkpoint_bytes_written=store.bytes_written if store else 0,
            outbox=len(self.outbox),
            resent_to_sinks=self.outbox.resent,
            fps=(frames - 1) / elapsed if frames > 1 and elapsed > 0 else 0.0,
            frame_age_p50_s=p50,
            frame_age_p99_s=p99,
            latency=self._latency.report(),
            counts=dict(self.engine.counts),
            frame_width=self._last_frame.width if self._last_frame else 0,
            frame_height=self._last_frame.height if self._last_frame else 0,
        )

    def close(self) -> None:
        self.taps.close()
        if self.outbox.changed:
            try:
                self._checkpoint()
            except FramechainError as e:
                log.warning("%s", e)
