"""Track: one process per camera, three plain objects in a row. ``Tracking`` puts
frames in sequence and runs ByteTrack (our vectorised port of the ``trackers``
library's, ``stages.track.bytetrack``); the ``RuleEngine`` turns tracked frames into
events; ``MediaTaps`` redacts, keeps snapshots and hands frames to the annotate stage
over a lossy link, so drawing never slows counting. Each frame is acknowledged to
decode once all three are done with it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pipeline.clock import Clock, WallClock
from pipeline.detections import Detections
from pipeline.errors import FramechainError
from pipeline.messages import Detected, EndOfStream, Event, Frame, StreamStatus
from pipeline.metrics import FrameAges, Histogram
from pipeline.stage import Emit, Received, Stage
from stages.track.engine import RuleEngine
from stages.track.privacy import PrivacyConfig
from stages.track.rules import BUILTIN_RULES, Rule, RuleBase
from stages.track.rules.base import rule_types
from stages.track.snapshots import SnapshotConfig
from stages.track.stats import TrackStats
from stages.track.taps import MediaTaps
from stages.track.tracking import TrackerConfig, Tracking

log = logging.getLogger(__name__)


class TrackStage(Stage):
    def __init__(
        self,
        stream_id: str,
        tracker: TrackerConfig,
        rules: Sequence[RuleBase],
        load_rules: Callable[[], Sequence[RuleBase]] | None = None,
        snapshots: SnapshotConfig | None = None,
        aggregate_s: float | None = None,
        annotate: bool = False,
        privacy: PrivacyConfig | None = None,
        kinds: Mapping[type, type[Rule]] | None = None,
        clock: Clock | None = None,
    ) -> None:
        """``load_rules`` re-reads this camera's rules from the config file (SIGHUP).
        ``kinds``: the rule class of each rule config (default: the built-in ones).
        ``clock``: the time frame ages are measured against."""
        self.stream_id = stream_id
        self.clock = clock or WallClock()
        self.load_rules = load_rules
        self.tracking = Tracking(stream_id, tracker)
        self.taps = MediaTaps(stream_id, snapshots, annotate, privacy)
        self.engine = RuleEngine(
            stream_id,
            rules,
            kinds or rule_types(BUILTIN_RULES),
            tracker.lost_track_s,
            aggregate_s,
            self.taps.snapshot_path if snapshots is not None else None,
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
    def rules(self) -> list[RuleBase]:
        return self.engine.rules

    def setup(self) -> None:
        from stages.track import bytetrack  # noqa: F401  imports scipy: before frames

        self.taps.setup()

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
        for item in batch:
            message = item.message
            seq = self.tracking.admit(message)
            if seq is None:
                continue
            if isinstance(message, Detected):
                emits.extend(self._apply(message, item.parts))
            elif isinstance(message, StreamStatus):
                emits.extend(Emit("events", e) for e in self._status_events(message))
            elif isinstance(message, EndOfStream):
                self._done = True
                self.taps.expire(set())
                final = self.engine.final_events(message, self._last_frame)
                emits.extend(Emit("events", e) for e in final)
                emits.append(Emit("events", message))
            emits.append(Emit("acks", self.tracking.ack(seq)))
        self.counters["events_emitted"] += sum(
            isinstance(e.message, Event) for e in emits
        )
        return emits

    def _status_events(self, status: StreamStatus) -> list[Event]:
        """camera_online / camera_offline. Going offline also ends every track:
        nothing is carried across an outage, so tracks inside zones exit (reason
        ``lost``) and their snapshots are written."""
        self.counters[f"camera_{status.state}"] += 1
        events = []
        if status.state == "offline":
            self.tracking.reset()
            if self._last_frame is not None:
                events = self.engine.end_tracks(self._last_frame)
                self.taps.expire(set())
        events.append(self.engine.status_event(status))
        return events

    def _apply(self, message: Detected, parts: Sequence[Any]) -> list[Emit]:
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
        emits = [Emit("events", e) for e in self.engine.apply(frame, tracked)]
        if self.engine.ended:
            self.taps.expire(set(self.engine.tracks))
        if self.taps.annotate and pixels is not None:
            overlay = self.engine.overlay()
            emits.append(self.taps.annotated(message, tracked, pixels, overlay))
        return emits

    def _measure(self, frame: Frame) -> None:
        now = self.clock.now()
        if not self._first_ts:
            self._first_ts = now
        self._last_ts = now
        self._ages.add(frame.capture_ts, now)
        self._latency.observe(now - frame.capture_ts)
        self.counters["frames"] += 1

    def finished(self) -> bool:
        return self._done

    def stats(self) -> TrackStats:
        frames = self.counters["frames"]
        elapsed = self._last_ts - self._first_ts
        p50, p99 = self._ages.quantiles()
        return TrackStats(
            **self.counters,
            **self.tracking.counters,
            **self.taps.stats(),
            next_seq=self.tracking.next_seq,
            fps=(frames - 1) / elapsed if frames > 1 and elapsed > 0 else 0.0,
            frame_age_p50_s=p50,
            frame_age_p99_s=p99,
            latency=self._latency.report(),
            counts=dict(self.engine.counts),
        )

    def close(self) -> None:
        self.taps.close()
