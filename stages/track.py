"""Track: one process per camera. Keeps that camera's ByteTrack state (our
vectorised port of the ``trackers`` library's, ``stages.bytetrack``) and applies the
camera's rules, then acknowledges each frame to decode. It also keeps each track's
mean confidence (the events' low-confidence flag) and best crop (snapshots), and
hands tracked frames to the camera's annotate stage over a lossy link, so drawing
never slows counting.

Frames are applied strictly in sequence: a frame that arrives ahead of a gap is left
for decode to re-send, and one already applied is ignored, so tracker state and events
are the same whether or not an upstream stage was restarted mid-run.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import msgspec
import numpy as np
from pydantic import Field

from pipeline.configtypes import StrictModel
from pipeline.detections import Detections
from pipeline.errors import FramechainError
from pipeline.masks import polygon_region
from pipeline.messages import (
    Ack,
    Detected,
    EndOfStream,
    Event,
    Frame,
    StreamStatus,
    event_id,
)
from pipeline.metrics import FrameAges, Histogram
from pipeline.shm import RingReader, SlotOverwrittenError
from pipeline.stage import Emit, Received, Stage
from stages.aggregate import IntervalCounts
from stages.privacy import PrivacyConfig, redact
from stages.rules import (
    CrowdMonitor,
    CrowdRuleConfig,
    LineCounter,
    LineRuleConfig,
    RuleConfig,
    Visit,
    ZoneCounter,
    ZoneRuleConfig,
    ZoneVisits,
)
from stages.snapshots import SnapshotConfig, SnapshotStore

if TYPE_CHECKING:
    from stages.bytetrack import ByteTrack

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


def make_tracker(config: TrackerConfig, fps: float) -> ByteTrack:
    """A camera's tracker for a stream at ``fps`` (the lost budget is in seconds,
    R29). Shared with the tracker benchmark and its parity tests."""
    from stages.bytetrack import ByteTrack, lost_frames_budget

    return ByteTrack(
        max_lost_frames=lost_frames_budget(config.lost_track_s, fps),
        activation_threshold=config.activation_threshold,
        high_confidence=config.high_confidence,
        min_consecutive_frames=config.min_consecutive_frames,
        match_iou=config.match_iou,
    )


@dataclass(slots=True)
class _TrackInfo:
    """What the stage remembers of a track besides the tracker's own state."""

    confidence_sum: float = 0.0
    frames: int = 0
    seen: float = 0.0
    label_votes: dict[int, float] = field(default_factory=dict)  # label -> scores

    @property
    def label(self) -> int:
        """The classifier label with the most score over the track, or -1."""
        if not self.label_votes:
            return -1
        return max(self.label_votes, key=self.label_votes.__getitem__)

    @property
    def confidence(self) -> float:
        return self.confidence_sum / self.frames if self.frames else 0.0


RuleState = LineCounter | tuple[ZoneCounter, ZoneVisits] | CrowdMonitor


class TrackStage(Stage):
    kind: ClassVar[str] = "track"

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
    ) -> None:
        """``load_rules`` re-reads this camera's rules from the config file (SIGHUP).
        ``annotate``: emit tracked frames with pixels on the ``annotate`` port.
        ``privacy``: hide these classes in those frames and in snapshots."""
        self.stream_id = stream_id
        self.tracker_config = tracker
        self.rules = list(rules)
        self.load_rules = load_rules
        self.snapshot_config = snapshots
        self.annotate = annotate
        self.privacy = privacy
        self._private_classes = np.empty(0, np.int32)
        self._tracker: ByteTrack | None = None
        self._id_offset = 0
        self._max_track_id = -1
        self._tracker_fps = 0.0
        self._states: list[RuleState] = []
        self._rule_classes: list[np.ndarray | None] = []
        self._names: tuple[str, ...] = ()
        self._labels: tuple[str, ...] = ()  # the crop classifier's
        self._next_seq = 0
        self._done = False
        self._tracks: dict[int, _TrackInfo] = {}
        self._regions: dict[tuple[str, int, int], np.ndarray] = {}  # zone rasters
        self._totals: dict[tuple[str, str], int] = defaultdict(int)
        self._snapshots: SnapshotStore | None = None
        self._aggregate = IntervalCounts(aggregate_s) if aggregate_s else None
        self._reader = RingReader()
        self._last_frame: Frame | None = None
        self.counts: dict[str, int] = defaultdict(int)
        self.counters: dict[str, int] = defaultdict(int)
        self._first_ts = 0.0
        self._last_ts = 0.0
        self._ages = FrameAges()
        self._latency = Histogram()

    def setup(self) -> None:
        from stages import bytetrack  # noqa: F401  imports scipy: before frames flow

        self._states = [self._state(rule) for rule in self.rules]
        if self.snapshot_config is not None:
            self._snapshots = SnapshotStore(self.snapshot_config, self.stream_id)

    def _state(self, rule: RuleConfig) -> RuleState:
        if isinstance(rule, LineRuleConfig):
            return LineCounter(
                np.array(rule.start, np.float64),
                np.array(rule.end, np.float64),
                rule.band_px,
                rule.confirm_frames,
            )
        if isinstance(rule, ZoneRuleConfig):
            polygon = np.array(rule.polygon, np.float64)
            return ZoneCounter(polygon), ZoneVisits(
                polygon,
                rule.confirm_frames,
                rule.loiter_s,
                self.tracker_config.lost_track_s,
            )
        return CrowdMonitor(
            None if rule.polygon is None else np.array(rule.polygon, np.float64),
            rule.threshold,
            rule.min_duration_s,
            rule.clear_below or rule.threshold,
            rule.min_duration_s
            if rule.clear_duration_s is None
            else rule.clear_duration_s,
        )

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
        old = list(zip(self.rules, self._states, strict=True))
        self._states = [
            next((state for r, state in old if r == rule), None) or self._state(rule)
            for rule in rules
        ]
        self.rules = rules
        self._resolve_classes(self._names)
        self.counters["reloads"] += 1
        log.info("%s: %d rules loaded", self.stream_id, len(rules))

    def _make_tracker(self, fps: float) -> ByteTrack:
        log.info("tracker for %s at %.2f fps", self.stream_id, fps)
        return make_tracker(self.tracker_config, fps)

    def _track(self, detections: Detections) -> Detections:
        """ByteTrack over the detections; rows it does not confirm are dropped,
        the rest keep their masks and columns and get the track's id."""
        assert self._tracker is not None
        rows, ids = self._tracker.update(detections.xyxy, detections.confidence)
        return replace(detections[rows], tracker_id=ids)

    def _resolve_classes(self, names: tuple[str, ...]) -> None:
        index = {name: i for i, name in enumerate(names)}
        self._names = names
        self._rule_classes = [
            None
            if rule.classes is None
            else np.array([index[c] for c in rule.classes if c in index], np.int32)
            for rule in self.rules
        ]
        if self.privacy is not None:
            self._private_classes = np.array(
                [index[c] for c in self.privacy.classes if c in index], np.int32
            )

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
                emits.extend(Emit("events", e) for e in self._status_events(message))
            elif isinstance(message, EndOfStream):
                self._done = True
                emits.extend(Emit("events", e) for e in self._final_events(message))
                emits.append(Emit("events", message))
            emits.append(Emit("acks", Ack(self.stream_id, seq)))
        self.counters["events_emitted"] += sum(
            isinstance(e.message, Event) for e in emits
        )
        return emits

    def _status_events(self, status: StreamStatus) -> list[Event]:
        """camera_online / camera_offline, stored like any other event. Going
        offline also ends every track: nothing is carried across an outage (R6), so
        tracks inside zones exit (reason ``lost``) and their snapshots are written."""
        kind = f"camera_{status.state}"
        self.counters[kind] += 1
        events = []
        if status.state == "offline":
            if self._tracker is not None:
                self._id_offset = self._max_track_id + 1
                self._tracker = None
            if self._last_frame is not None:
                events = self._end_tracks(self._last_frame)
        events.append(
            Event(
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
        )
        return events

    def _end_tracks(self, frame: Frame) -> list[Event]:
        events = []
        for rule, state in zip(self.rules, self._states, strict=True):
            if isinstance(state, tuple):
                for visit in state[1].end_all():
                    events.append(self._visit_event(frame, rule, visit))
            elif isinstance(state, LineCounter):
                state.tracks.clear()
        if self._snapshots is not None:
            self._snapshots.expire(set())
        self._tracks.clear()
        return events

    def _apply(self, message: Detected, parts: Sequence[Any]) -> list[Emit]:
        frame = message.frame
        if message.names != self._names:
            self._resolve_classes(message.names)
        self._labels = message.labels
        if self._tracker is None or abs(frame.fps - self._tracker_fps) > 1e-3:
            self._tracker = self._make_tracker(frame.fps)
            self._tracker_fps = frame.fps
        detections = Detections.from_parts(
            message.count, parts, masks=message.masks, labels=bool(message.labels)
        )
        tracked = self._track(detections)
        if tracked.tracker_id is not None and len(tracked):
            # a fresh tracker after an outage counts from 0 again: keep ids unique
            tracked = replace(tracked, tracker_id=tracked.tracker_id + self._id_offset)
            self._max_track_id = max(self._max_track_id, int(tracked.tracker_id.max()))
        else:
            tracked = replace(tracked, tracker_id=np.empty(0, np.int64))
        assert tracked.tracker_id is not None
        self._remember(tracked, frame.pts)
        self._last_frame = frame
        pixels = None
        if self._snapshots is not None or self.annotate:
            pixels = self._pixels(message, parts)
        if pixels is not None and self.privacy is not None:
            pixels = redact(pixels, detections, self._private_classes, self.privacy)
        if self._snapshots is not None and pixels is not None and len(tracked):
            self._snapshots.offer(
                pixels, tracked.xyxy, tracked.confidence, tracked.tracker_id
            )
        now = time.time()
        if not self._first_ts:
            self._first_ts = now
        self._last_ts = now
        self._ages.add(frame.capture_ts, now)
        self._latency.observe(now - frame.capture_ts)
        self.counters["frames"] += 1
        emits = [Emit("events", e) for e in self._rule_events(message, tracked)]
        self._forget(frame.pts)
        if self.annotate and pixels is not None:
            emits.append(self._annotated(message, tracked, pixels))
        return emits

    def _final_events(self, eos: EndOfStream) -> list[Event]:
        """At the end of a stream: the last, partial aggregate; pending snapshots
        are written."""
        if self._snapshots is not None:
            self._snapshots.expire(set())
        if self._aggregate is None or self._last_frame is None:
            return []
        report = self._aggregate.report(partial=True)
        if report is None:
            return []
        return [
            self._counts_event(
                msgspec.structs.replace(self._last_frame, seq=eos.seq), report
            )
        ]

    def _remember(self, tracked: Detections, pts: float) -> None:
        assert tracked.tracker_id is not None
        labels = tracked.data.get("label")
        scores = tracked.data.get("label_score")
        for i, (track_id, confidence) in enumerate(
            zip(tracked.tracker_id.tolist(), tracked.confidence.tolist(), strict=True)
        ):
            info = self._tracks.get(track_id)
            if info is None:
                info = self._tracks[track_id] = _TrackInfo()
            info.confidence_sum += confidence
            info.frames += 1
            info.seen = pts
            if labels is not None and scores is not None and labels[i] >= 0:
                label = int(labels[i])
                info.label_votes[label] = info.label_votes.get(label, 0.0) + float(
                    scores[i]
                )

    def _forget(self, pts: float) -> None:
        """Tracks unseen for longer than the tracker keeps them are over: write their
        snapshots and drop what the rules and this stage hold on them."""
        horizon = pts - self.tracker_config.lost_track_s - 1.0
        ended = [t for t, info in self._tracks.items() if info.seen < horizon]
        for track_id in ended:
            del self._tracks[track_id]
        if ended and self._snapshots is not None:
            self._snapshots.expire(set(self._tracks))
        for state in self._states:
            if isinstance(state, LineCounter):
                state.forget(older_than=horizon)

    def _pixels(self, message: Detected, parts: Sequence[Any]) -> np.ndarray | None:
        frame = message.frame
        shape = (frame.height, frame.width, 3)
        try:
            if message.pixels:
                return np.frombuffer(parts[-1], np.uint8).reshape(shape)
            if frame.shm is not None:
                # decode does not reuse the slot before this frame is acknowledged
                return self._reader.view(frame.shm, shape)
        except (SlotOverwrittenError, ValueError) as e:
            log.warning("no pixels for frame %d: %s", frame.seq, e)
        self.counters["frames_without_pixels"] += 1
        return None

    def _annotated(
        self, message: Detected, tracked: Detections, pixels: np.ndarray
    ) -> Emit:
        """A tracked frame for the annotate stage, pixels inline (the ring slot is
        reused once this frame is acknowledged)."""
        frame = msgspec.structs.replace(message.frame, shm=None)
        overlay: dict[str, Any] = {"lines": [], "zones": []}
        for rule, state in zip(self.rules, self._states, strict=True):
            if isinstance(rule, LineRuleConfig):
                overlay["lines"].append(
                    {
                        "name": rule.name,
                        "start": list(rule.start),
                        "end": list(rule.end),
                        "in": self._totals[(rule.name, "in")],
                        "out": self._totals[(rule.name, "out")],
                    }
                )
            elif rule.polygon is not None:
                count = (
                    sum((state[0].last or {}).values())
                    if isinstance(state, tuple)
                    else int(isinstance(state, CrowdMonitor) and state.active)
                )
                overlay["zones"].append(
                    {
                        "name": rule.name,
                        "polygon": [list(p) for p in rule.polygon],
                        "count": count,
                        "crowd": isinstance(rule, CrowdRuleConfig),
                    }
                )
        header = Detected(
            frame,
            len(tracked),
            message.names,
            message.timings,
            tracked=True,
            pixels=True,
            overlay=overlay,
            masks=tracked.masks is not None,
            labels=message.labels if "label" in tracked.data else (),
        )
        # redaction already made a private copy; otherwise the slot's pixels must
        # be copied before the frame is acknowledged and the slot reused
        own = pixels if self.privacy is not None else pixels.copy()
        return Emit("annotate", header, [*tracked.to_parts(), own])

    def _event(
        self,
        frame: Frame,
        rule: RuleConfig | None,
        kind: str,
        *,
        track_id: int = -1,
        class_id: int = -1,
        direction: str = "",
        value: float = 0.0,
        data: dict[str, Any] | None = None,
    ) -> Event:
        """One event of this frame; events of a track carry its confidence, the
        low-confidence flag and its snapshot path."""
        rule_name = rule.name if rule is not None else "aggregate"
        confidence, low, snapshot = 0.0, False, ""
        info = self._tracks.get(track_id) if track_id >= 0 else None
        if info is not None:
            confidence = round(info.confidence, 4)
            low = rule is not None and confidence < rule.low_confidence_below
            if info.label >= 0 and info.label < len(self._labels):
                data = {**(data or {}), "label": self._labels[info.label]}
        if track_id >= 0 and self._snapshots is not None:
            snapshot = self._snapshots.path(track_id)
        return Event(
            event_id=event_id(self.stream_id, rule_name, kind, track_id, frame.seq),
            stream_id=self.stream_id,
            rule=rule_name,
            kind=kind,
            seq=frame.seq,
            pts=frame.pts,
            capture_ts=frame.capture_ts,
            track_id=track_id,
            class_id=class_id,
            class_name=self._names[class_id] if class_id >= 0 else "",
            direction=direction,
            value=value,
            data=data or {},
            confidence=confidence,
            low_confidence=low,
            snapshot=snapshot,
        )

    def _rule_events(self, message: Detected, tracked: Detections) -> list[Event]:
        frame = message.frame
        events: list[Event] = []
        if self._aggregate is not None:
            report = self._aggregate.roll(frame.pts)
            if report is not None:
                events.append(self._counts_event(frame, report))
        track_ids = tracked.tracker_id
        assert track_ids is not None
        for rule, state, classes in zip(
            self.rules, self._states, self._rule_classes, strict=True
        ):
            subset, ids = tracked, track_ids
            if classes is not None and len(tracked):
                keep = np.isin(tracked.class_id, classes)
                subset, ids = tracked[keep], track_ids[keep]
            anchors = subset.anchors(rule.anchor)
            if isinstance(state, LineCounter):
                for crossing in state.update(anchors, ids, subset.class_id, frame.pts):
                    name = self._names[crossing.class_id]
                    direction = crossing.direction
                    self.counts[f"{rule.name}/{name}/{direction}"] += 1
                    self._totals[(rule.name, direction)] += 1
                    if self._aggregate is not None:
                        self._aggregate.add_crossing(rule.name, direction, name)
                    events.append(
                        self._event(
                            frame,
                            rule,
                            "line_crossing",
                            track_id=crossing.track_id,
                            class_id=crossing.class_id,
                            direction=direction,
                            value=1.0,
                            data={
                                "total_in": self._totals[(rule.name, "in")],
                                "total_out": self._totals[(rule.name, "out")],
                            },
                        )
                    )
            elif isinstance(state, tuple):
                events.extend(
                    self._zone_events(message, rule, state, anchors, ids, subset)
                )
            else:
                change = state.update(anchors, frame.pts)
                if change is not None:
                    self.counts[f"{rule.name}/{change.kind}"] += 1
                    events.append(
                        self._event(
                            frame,
                            rule,
                            change.kind,
                            value=float(change.count),
                            data={
                                "since_pts": round(change.at, 3),
                                "peak": change.peak,
                                "duration_s": round(change.duration_s, 3),
                            },
                        )
                    )
        return events

    def _zone_events(
        self,
        message: Detected,
        rule: RuleConfig,
        state: tuple[ZoneCounter, ZoneVisits],
        anchors: np.ndarray,
        ids: np.ndarray,
        subset: Detections,
    ) -> list[Event]:
        occupancy_counter, visits = state
        events: list[Event] = []
        inside, coverage = self._mask_membership(message.frame, rule, subset)
        occupancy = occupancy_counter.update(anchors, subset.class_id, inside)
        if self._aggregate is not None:
            self._aggregate.add_occupancy(
                rule.name, sum((occupancy_counter.last or {}).values())
            )
        if occupancy is not None:
            events.append(
                self._event(
                    message.frame,
                    rule,
                    "zone_occupancy",
                    value=float(sum(occupancy.values())),
                    data={
                        "by_class": {self._names[c]: n for c, n in occupancy.items()},
                        **({} if coverage is None else {"coverage": coverage}),
                    },
                )
            )
        for visit in visits.update(
            anchors, ids, subset.class_id, message.frame.pts, inside
        ):
            events.append(self._visit_event(message.frame, rule, visit))
        return events

    def _mask_membership(
        self, frame: Frame, rule: RuleConfig, subset: Detections
    ) -> tuple[np.ndarray | None, float | None]:
        """For a mask-overlap zone: which objects have enough of their mask inside,
        and the share of the zone the masks cover (None, None otherwise)."""
        share = getattr(rule, "min_mask_overlap", None)
        if share is None or subset.masks is None or rule.polygon is None:
            return None, None
        key = (rule.name, frame.height, frame.width)
        region = self._regions.get(key)
        if region is None:
            polygon = np.asarray(rule.polygon, np.float64)
            region = self._regions[key] = polygon_region(
                polygon, frame.height, frame.width
            )
        areas = subset.masks.area()
        inside = subset.masks.area_inside(region) >= share * np.maximum(areas, 1)
        coverage = subset.masks.coverage(region) / max(1, int(region.sum()))
        return inside & (areas > 0), round(coverage, 4)

    def _visit_event(self, frame: Frame, rule: RuleConfig, visit: Visit) -> Event:
        self.counts[f"{rule.name}/{visit.kind}"] += 1
        data: dict[str, Any] = {"at_pts": round(visit.at, 3)}
        if visit.kind != "zone_enter":
            data["dwell_s"] = round(visit.dwell_s, 3)
        if visit.reason:
            data["reason"] = visit.reason
        return self._event(
            frame,
            rule,
            visit.kind,
            track_id=visit.track_id,
            class_id=visit.class_id,
            value=round(visit.dwell_s, 3),
            data=data,
        )

    def _counts_event(self, frame: Frame, report: dict[str, Any]) -> Event:
        return self._event(
            frame,
            None,
            "counts",
            value=float(
                sum(
                    n
                    for by_direction in report["lines"].values()
                    for counts in by_direction.values()
                    for n in counts.values()
                )
            ),
            data=report,
        )

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
            "snapshots_written": self._snapshots.written if self._snapshots else 0,
            "snapshots_failed": self._snapshots.failed if self._snapshots else 0,
        }

    def close(self) -> None:
        if self._snapshots is not None:
            self._snapshots.expire(set())
        self._reader.close()
