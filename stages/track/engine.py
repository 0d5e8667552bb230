"""The rule engine of one camera: rule states in, tracked detections and their frame
in, events and the annotation overlay out. It touches no pixels, sockets or clocks,
so the same frames always give the same events.

Besides the rules it keeps what events report of a track across frames: its mean
confidence (the low-confidence flag) and the crop classifier's votes (its label),
and the running totals and counts the summary and the overlay show.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence

import msgspec
import numpy as np

from pipeline.detections import Detections
from pipeline.eventkinds import EventKindSpec
from pipeline.eventlinks import EventLinks
from pipeline.messages import (
    EndOfStream,
    Event,
    Frame,
    Overlay,
    OverlayLine,
    StreamStatus,
    event_id,
)
from pipeline.state import decode, encode
from stages.track.aggregate import AggregateState, IntervalCounts
from stages.track.events import (
    TRACK_EVENTS,
    CameraStatusData,
    CountsData,
    OutsideFrameData,
)
from stages.track.rules.base import Rule, RuleConfig

log = logging.getLogger(__name__)


class TrackInfo(msgspec.Struct, array_like=True, gc=False):
    """What the engine remembers of a track besides the tracker's own state."""

    confidence_sum: float = 0.0
    frames: int = 0
    seen: float = 0.0
    label_votes: dict[int, float] = {}  # label -> scores

    @property
    def label(self) -> int:
        """The classifier label with the most score over the track, or -1."""
        if not self.label_votes:
            return -1
        return max(self.label_votes, key=self.label_votes.__getitem__)

    @property
    def confidence(self) -> float:
        return self.confidence_sum / self.frames if self.frames else 0.0


class RuleSnapshot(msgspec.Struct, frozen=True, array_like=True):
    """One rule's state, and the settings (JSON) it belongs to: it goes back only
    into a rule with the same settings."""

    settings: str
    state: msgspec.Raw


class EngineState(msgspec.Struct, frozen=True):
    """Everything the engine's events after a frame depend on."""

    names: tuple[str, ...]
    labels: tuple[str, ...]
    totals: list[tuple[str, str, int]]  # (rule, direction, crossings)
    counts: dict[str, int]
    tracks: dict[int, TrackInfo]
    aggregate: AggregateState | None
    rules: list[RuleSnapshot]


class RuleEngine:
    """Applies one camera's rules to its tracked frames, in frame order."""

    def __init__(
        self,
        stream_id: str,
        rules: Sequence[RuleConfig],
        rule_types: Mapping[type, type[Rule]],
        lost_track_s: float,
        aggregate_s: float | None = None,
        snapshot_path: Callable[[int, int], str] | None = None,
        links: EventLinks | None = None,
    ) -> None:
        """``rule_types``: the rule class of each rule config model;
        ``links``: the URLs of events' media on the HTTP API, when it is on.
        ``snapshot_path``: the snapshot file of a track (id, epoch), when snapshots
        are on."""
        self.stream_id = stream_id
        self.rule_types = rule_types
        self.event_kinds: dict[str, EventKindSpec] = {
            spec.name: spec
            for spec in (
                *TRACK_EVENTS,
                *(s for rule in rule_types.values() for s in rule.events),
            )
        }
        self.lost_track_s = lost_track_s
        self.snapshot_path = snapshot_path
        self.links = links
        self.rules: list[RuleConfig] = list(rules)
        self.states: list[Rule] = [self._state(rule) for rule in self.rules]
        self._settings = [rule.model_dump_json() for rule in self.rules]
        self.names: tuple[str, ...] = ()
        self.labels: tuple[str, ...] = ()  # the crop classifier's
        self._rule_classes: list[np.ndarray | None] = []
        self.aggregate = IntervalCounts(aggregate_s) if aggregate_s else None
        self.totals: dict[tuple[str, str], int] = defaultdict(int)
        self.counts: dict[str, int] = defaultdict(int)
        self.tracks: dict[int, TrackInfo] = {}
        self.ended: list[int] = []  # the tracks the last frame ended
        self._checked_size: tuple[int, int] | None = None  # rules vs frame size

    def _state(self, rule: RuleConfig) -> Rule:
        return self.rule_types[type(rule)](rule, self.lost_track_s)

    def replace_rules(self, rules: Sequence[RuleConfig]) -> None:
        """New rules; a rule whose settings did not change keeps its state."""
        old = list(zip(self.rules, self.states, strict=True))
        self.states = [
            next((state for r, state in old if r == rule), None) or self._state(rule)
            for rule in rules
        ]
        self.rules = list(rules)
        self._settings = [rule.model_dump_json() for rule in self.rules]
        self.resolve_classes(self.names)
        self._checked_size = None

    def snapshot(self) -> EngineState:
        return EngineState(
            self.names,
            self.labels,
            [(rule, direction, n) for (rule, direction), n in self.totals.items()],
            dict(self.counts),
            self.tracks,
            None if self.aggregate is None else self.aggregate.snapshot(),
            [
                RuleSnapshot(settings, msgspec.Raw(encode(state.snapshot())))
                for settings, state in zip(self._settings, self.states, strict=True)
            ],
        )

    def restore(self, saved: EngineState) -> None:
        """Back to ``saved``, under the rules the engine has now: a rule whose
        settings are those of a saved one takes its state, any other starts
        afresh (as a SIGHUP reload does).

        Raises:
            StateError: a rule's saved state does not decode into its struct.
        """
        by_settings = {r.settings: r.state for r in saved.rules}
        restored = []  # decoded first: a rule that does not fit changes nothing
        for rule, settings, state in zip(
            self.rules, self._settings, self.states, strict=True
        ):
            raw = by_settings.get(settings)
            if raw is None:
                log.info(
                    "%s: rule %s changed since the checkpoint: it starts afresh",
                    self.stream_id,
                    rule.name,
                )
                continue
            restored.append((state, decode(raw, state.state_type)))
        for state, rule_state in restored:
            state.restore(rule_state)
        self.labels = saved.labels
        self.totals = defaultdict(int, {(r, d): n for r, d, n in saved.totals})
        self.counts = defaultdict(int, saved.counts)
        self.tracks = dict(saved.tracks)
        if self.aggregate is not None and saved.aggregate is not None:
            self.aggregate.restore(saved.aggregate)
        self.resolve_classes(saved.names)

    def resolve_classes(self, names: tuple[str, ...]) -> None:
        """The model's class names (they come with the first frame)."""
        index = {name: i for i, name in enumerate(names)}
        self.names = names
        self._rule_classes = [
            None
            if rule.classes is None
            else np.array([index[c] for c in rule.classes if c in index], np.int32)
            for rule in self.rules
        ]

    def count(self, key: str) -> None:
        self.counts[key] += 1

    def apply(self, frame: Frame, tracked: Detections) -> list[Event]:
        """The events of one tracked frame (``tracked.tracker_id`` set)."""
        self._remember(tracked, frame.pts)
        events: list[Event] = []
        if self.aggregate is not None:
            report = self.aggregate.roll(frame.pts)
            if report is not None:
                events.append(self._counts_event(frame, report))
        track_ids = tracked.tracker_id
        assert track_ids is not None
        for rule, state, classes in zip(
            self.rules, self.states, self._rule_classes, strict=True
        ):
            subset, ids = tracked, track_ids
            if classes is not None and len(tracked):
                keep = np.isin(tracked.class_id, classes)
                subset, ids = tracked[keep], track_ids[keep]
            anchors = subset.anchors(rule.anchor)
            events.extend(state.evaluate(self, frame, subset, anchors, ids))
        self.ended = self._forget(frame.pts)
        return events

    def geometry_events(self, frame: Frame) -> list[Event]:
        """Rules with points outside the frame, once per frame size and rule set:
        the config cannot know the camera's size, and a line drawn for another
        resolution never counts. A warning (event and log), not an error."""
        width, height = frame.width, frame.height
        if self._checked_size == (width, height):
            return []
        self._checked_size = (width, height)
        events = []
        for rule in self.rules:
            outside = [
                (x, y)
                for x, y in rule.points()
                if not (0 <= x <= width and 0 <= y <= height)
            ]
            if outside:
                log.warning(
                    "%s: rule %s has %d point(s) outside the %dx%d frame (first %s); "
                    "fix its coordinates",
                    self.stream_id,
                    rule.name,
                    len(outside),
                    width,
                    height,
                    list(outside[0]),
                )
                data = OutsideFrameData((width, height), outside)
                events.append(self.event(frame, rule, "rule_outside_frame", data))
        return events

    def end_tracks(self, frame: Frame) -> list[Event]:
        """The camera went away: every track ends (zone visits exit, ``lost``)."""
        events = []
        for state in self.states:
            events.extend(state.end_tracks(self, frame))
        self.tracks.clear()
        return events

    def status_event(self, status: StreamStatus) -> Event:
        """camera_online / camera_offline, stored like any other event."""
        kind = "camera_online" if status.state == "online" else "camera_offline"
        data = CameraStatusData(status.reason, status.detail)
        return Event(
            event_id=event_id(
                self.stream_id, "camera", kind, -1, status.seq, status.epoch
            ),
            stream_id=self.stream_id,
            rule="camera",
            kind=kind,
            seq=status.seq,
            pts=0.0,
            capture_ts=status.ts,
            direction=status.reason,
            data=self.event_kinds[kind].to_data(data),
        )

    def final_events(self, eos: EndOfStream, last_frame: Frame | None) -> list[Event]:
        """At the end of a stream: the last, partial aggregate."""
        if self.aggregate is None or last_frame is None:
            return []
        report = self.aggregate.report(partial=True)
        if report is None:
            return []
        frame = msgspec.structs.replace(last_frame, seq=eos.seq)
        return [self._counts_event(frame, report)]

    def overlay(self) -> Overlay:
        lines, zones = [], []
        for state in self.states:
            shape = state.overlay(self)
            if isinstance(shape, OverlayLine):
                lines.append(shape)
            elif shape is not None:
                zones.append(shape)
        return Overlay(tuple(lines), tuple(zones))

    def _remember(self, tracked: Detections, pts: float) -> None:
        assert tracked.tracker_id is not None
        labels = tracked.data.get("label")
        scores = tracked.data.get("label_score")
        for i, (track_id, confidence) in enumerate(
            zip(tracked.tracker_id.tolist(), tracked.confidence.tolist(), strict=True)
        ):
            info = self.tracks.get(track_id)
            if info is None:
                info = self.tracks[track_id] = TrackInfo()
            info.confidence_sum += confidence
            info.frames += 1
            info.seen = pts
            if labels is not None and scores is not None and labels[i] >= 0:
                label = int(labels[i])
                info.label_votes[label] = info.label_votes.get(label, 0.0) + float(
                    scores[i]
                )

    def _forget(self, pts: float) -> list[int]:
        """Tracks unseen for longer than the tracker keeps them are over: drop what
        the rules and the engine hold on them."""
        horizon = pts - self.lost_track_s - 1.0
        ended = [t for t, info in self.tracks.items() if info.seen < horizon]
        for track_id in ended:
            del self.tracks[track_id]
        for state in self.states:
            state.forget(older_than=horizon)
        return ended

    def event(
        self,
        frame: Frame,
        rule: RuleConfig | None,
        kind: str,
        data: msgspec.Struct,
        *,
        track_id: int = -1,
        class_id: int = -1,
        direction: str = "",
        value: float = 0.0,
    ) -> Event:
        """One event of this frame; events of a track carry its confidence, the
        low-confidence flag, its label and its snapshot path.

        Raises:
            TypeError: ``kind`` is not registered by the rule kinds or the track,
                or ``data`` is not its struct (a rule kind's bug).
        """
        spec = self.event_kinds.get(kind)
        if spec is None:
            raise TypeError(
                f"event kind {kind!r} is not registered; list it in the rule "
                "class's events"
            )
        payload = spec.to_data(data)
        rule_name = rule.name if rule is not None else "aggregate"
        confidence, low, snapshot = 0.0, False, ""
        info = self.tracks.get(track_id) if track_id >= 0 else None
        if info is not None:
            confidence = round(info.confidence, 4)
            low = rule is not None and confidence < rule.low_confidence_below
            if info.label >= 0 and info.label < len(self.labels):
                payload["label"] = self.labels[info.label]
        if track_id >= 0 and self.snapshot_path is not None:
            snapshot = self.snapshot_path(track_id, frame.epoch)
        identity = event_id(
            self.stream_id, rule_name, kind, track_id, frame.seq, frame.epoch
        )
        links = self.links
        return Event(
            event_id=identity,
            stream_id=self.stream_id,
            rule=rule_name,
            kind=kind,
            seq=frame.seq,
            pts=frame.pts,
            capture_ts=frame.capture_ts,
            track_id=track_id,
            class_id=class_id,
            class_name=self.names[class_id] if class_id >= 0 else "",
            direction=direction,
            value=value,
            data=payload,
            confidence=confidence,
            low_confidence=low,
            snapshot=snapshot,
            snapshot_url=links.snapshot(identity) if links and snapshot else "",
            clip_url=links.clip(identity, kind, track_id) if links else "",
        )

    def _counts_event(self, frame: Frame, report: CountsData) -> Event:
        total = sum(
            n
            for by in report.lines.values()
            for counts in by.values()
            for n in counts.values()
        )
        return self.event(frame, None, "counts", report, value=float(total))
