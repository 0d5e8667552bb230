"""Track: one process per camera. Keeps that camera's ByteTrack state (from the
maintained ``trackers`` library) and applies the camera's rules, then acknowledges
each frame to decode.

Frames are applied strictly in sequence: a frame that arrives ahead of a gap is left
for decode to re-send, and one already applied is ignored, so tracker state and events
are the same whether or not an upstream stage was restarted mid-run.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from pipeline.configtypes import StrictModel
from pipeline.convert import from_supervision, to_supervision
from pipeline.detections import Detections
from pipeline.errors import FramechainError
from pipeline.messages import Ack, Detected, EndOfStream, Event, StreamStatus, event_id
from pipeline.metrics import FrameAges, Histogram
from pipeline.stage import Emit, Received, Stage
from stages.rules import LineCounter, LineRuleConfig, RuleConfig, ZoneCounter

log = logging.getLogger(__name__)


class TrackerConfig(StrictModel):
    kind: Literal["bytetrack"] = Field(
        default="bytetrack", description="Tracker algorithm."
    )
    lost_track_s: float = Field(
        default=1.0, gt=0, description="Keep a lost track this many seconds (R29)."
    )
    activation_threshold: float = Field(
        default=0.25, gt=0, lt=1, description="Minimum confidence that starts a track."
    )
    high_confidence: float = Field(
        default=0.5, gt=0, lt=1, description="First-stage association threshold."
    )
    min_consecutive_frames: int = Field(
        default=2, ge=1, description="Frames before a new track gets an id."
    )
    match_iou: float = Field(
        default=0.1, gt=0, lt=1, description="Minimum IoU to match."
    )


class TrackStage(Stage):
    kind: ClassVar[str] = "track"

    def __init__(
        self,
        stream_id: str,
        tracker: TrackerConfig,
        rules: Sequence[RuleConfig],
        load_rules: Callable[[], Sequence[RuleConfig]] | None = None,
    ) -> None:
        """``load_rules`` re-reads this camera's rules from the config file (SIGHUP)."""
        self.stream_id = stream_id
        self.tracker_config = tracker
        self.rules = list(rules)
        self.load_rules = load_rules
        self._tracker: Any = None
        self._id_offset = 0
        self._max_track_id = -1
        self._tracker_fps = 0.0
        self._counters: list[LineCounter | ZoneCounter] = []
        self._rule_classes: list[np.ndarray | None] = []
        self._names: tuple[str, ...] = ()
        self._next_seq = 0
        self._done = False
        self.counts: dict[str, int] = defaultdict(int)
        self.counters: dict[str, int] = defaultdict(int)
        self._first_ts = 0.0
        self._last_ts = 0.0
        self._ages = FrameAges()
        self._latency = Histogram()

    def setup(self) -> None:
        import trackers  # noqa: F401  heavy (supervision, scipy): import before frames flow

        self._counters = [self._counter(rule) for rule in self.rules]

    @staticmethod
    def _counter(rule: RuleConfig) -> LineCounter | ZoneCounter:
        if isinstance(rule, LineRuleConfig):
            return LineCounter(
                np.array(rule.start, np.float64),
                np.array(rule.end, np.float64),
                rule.band_px,
                rule.confirm_frames,
            )
        return ZoneCounter(np.array(rule.polygon, np.float64))

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
        old = list(zip(self.rules, self._counters, strict=True))
        self._counters = [
            next((c for r, c in old if r == rule), None) or self._counter(rule)
            for rule in rules
        ]
        self.rules = rules
        self._resolve_classes(self._names)
        self.counters["reloads"] += 1
        log.info("%s: %d rules loaded", self.stream_id, len(rules))

    def _make_tracker(self, fps: float) -> Any:
        from trackers import ByteTrackTracker

        cfg = self.tracker_config
        log.info("tracker for %s at %.2f fps", self.stream_id, fps)
        return ByteTrackTracker(
            # trackers counts the buffer in 30 fps frames; we configure seconds (R29)
            lost_track_buffer=max(1, round(cfg.lost_track_s * 30)),
            frame_rate=fps,
            track_activation_threshold=cfg.activation_threshold,
            minimum_consecutive_frames=cfg.min_consecutive_frames,
            minimum_iou_threshold=cfg.match_iou,
            high_conf_det_threshold=cfg.high_confidence,
        )

    def _resolve_classes(self, names: tuple[str, ...]) -> None:
        index = {name: i for i, name in enumerate(names)}
        self._names = names
        self._rule_classes = [
            None
            if rule.classes is None
            else np.array([index[c] for c in rule.classes if c in index], np.int32)
            for rule in self.rules
        ]

    def process(self, batch: Sequence[Received]) -> Iterable[Emit]:
        emits: list[Emit] = []
        for item in batch:
            message = item.message
            if isinstance(message, Detected):
                seq = message.frame.seq
            elif isinstance(message, EndOfStream | StreamStatus):
                seq = message.seq
            else:
                continue
            if seq < self._next_seq:
                self.counters["duplicates"] += 1
                continue
            if seq > self._next_seq:
                self.counters["out_of_order"] += 1  # decode re-sends the gap
                continue
            self._next_seq += 1
            if isinstance(message, Detected):
                emits.extend(self._apply(message, item.parts))
            elif isinstance(message, StreamStatus):
                emits.append(Emit("events", self._status_event(message)))
            elif isinstance(message, EndOfStream):
                self._done = True
                emits.append(Emit("events", message))
            emits.append(Emit("acks", Ack(self.stream_id, seq)))
        self.counters["events_emitted"] += sum(
            isinstance(e.message, Event) for e in emits
        )
        return emits

    def _status_event(self, status: StreamStatus) -> Event:
        """camera_online / camera_offline, stored like any other event. Going
        offline also ends every track: nothing is carried across an outage (R6)."""
        kind = f"camera_{status.state}"
        self.counters[kind] += 1
        if status.state == "offline" and self._tracker is not None:
            self._id_offset = self._max_track_id + 1
            self._tracker = None
        return Event(
            event_id=event_id(self.stream_id, "camera", kind, -1, status.seq),
            stream_id=self.stream_id,
            rule="camera",
            kind=kind,
            seq=status.seq,
            pts=0.0,
            capture_ts=status.ts,
            direction=status.reason,
            data={"reason": status.reason, "detail": status.detail},
        )

    def _apply(self, message: Detected, parts: Sequence[Any]) -> list[Emit]:
        frame = message.frame
        if message.names != self._names:
            self._resolve_classes(message.names)
        if self._tracker is None or abs(frame.fps - self._tracker_fps) > 1e-3:
            self._tracker = self._make_tracker(frame.fps)
            self._tracker_fps = frame.fps
        detections = Detections.from_parts(message.count, parts)
        tracked = from_supervision(self._tracker.update(to_supervision(detections)))
        if tracked.tracker_id is not None and len(tracked):
            tracked = tracked[tracked.tracker_id >= 0]
        if tracked.tracker_id is not None and len(tracked):
            # a fresh tracker after an outage counts from 0 again: keep ids unique
            tracked = replace(tracked, tracker_id=tracked.tracker_id + self._id_offset)
            self._max_track_id = max(self._max_track_id, int(tracked.tracker_id.max()))
        now = time.time()
        if not self._first_ts:
            self._first_ts = now
        self._last_ts = now
        self._ages.add(frame.capture_ts, now)
        self._latency.observe(now - frame.capture_ts)
        self.counters["frames"] += 1
        return [Emit("events", e) for e in self._rule_events(message, tracked)]

    def _rule_events(self, message: Detected, tracked: Detections) -> list[Event]:
        frame = message.frame
        events: list[Event] = []
        track_ids = (
            tracked.tracker_id
            if tracked.tracker_id is not None
            else np.empty(0, np.int64)
        )
        for rule, counter, classes in zip(
            self.rules, self._counters, self._rule_classes, strict=True
        ):
            subset = tracked
            ids = track_ids
            if classes is not None and len(tracked):
                keep = np.isin(tracked.class_id, classes)
                subset, ids = tracked[keep], track_ids[keep]
            anchors = subset.anchors(rule.anchor)
            base = {
                "stream_id": self.stream_id,
                "rule": rule.name,
                "seq": frame.seq,
                "pts": frame.pts,
                "capture_ts": frame.capture_ts,
            }
            if isinstance(counter, LineCounter):
                for crossing in counter.update(
                    anchors, ids, subset.class_id, frame.pts
                ):
                    name = self._names[crossing.class_id]
                    self.counts[f"{rule.name}/{name}/{crossing.direction}"] += 1
                    events.append(
                        Event(
                            event_id=event_id(
                                self.stream_id,
                                rule.name,
                                "line_crossing",
                                crossing.track_id,
                                frame.seq,
                            ),
                            kind="line_crossing",
                            track_id=crossing.track_id,
                            class_id=crossing.class_id,
                            class_name=name,
                            direction=crossing.direction,
                            value=1.0,
                            **base,
                        )
                    )
                counter.forget(older_than=frame.pts - 60.0)
            else:
                occupancy = counter.update(anchors, subset.class_id)
                if occupancy is not None:
                    events.append(
                        Event(
                            event_id=event_id(
                                self.stream_id,
                                rule.name,
                                "zone_occupancy",
                                -1,
                                frame.seq,
                            ),
                            kind="zone_occupancy",
                            value=float(sum(occupancy.values())),
                            data={
                                "by_class": {
                                    self._names[c]: n for c, n in occupancy.items()
                                }
                            },
                            **base,
                        )
                    )
        return events

    def finished(self) -> bool:
        return self._done

    def stats(self) -> dict[str, Any]:
        frames = self.counters["frames"]
        elapsed = self._last_ts - self._first_ts
        return {
            **self.counters,
            "next_seq": self._next_seq,
            "fps": (frames - 1) / elapsed if frames > 1 and elapsed > 0 else 0.0,
            **self._ages.report(),
            "latency": self._latency.report(),
            "counts": dict(self.counts),
        }
