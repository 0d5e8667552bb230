"""Periodic aggregates for dashboards: line counts and zone occupancy per interval.

Intervals are aligned to multiples of ``interval_s`` in frame time, so the same file
gives the same buckets on every run. An interval is reported at the first frame past
its end (and the last, partial one when the stream ends), as one ``counts`` event.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import msgspec

from stages.track.events import CountsData, ZoneSummary


class AggregateState(msgspec.Struct, frozen=True):
    """The open interval's start and what it has counted so far."""

    start: float | None
    lines: dict[str, dict[str, dict[str, int]]]
    zones: dict[str, list[float]]


@dataclass
class IntervalCounts:
    interval_s: float
    start: float | None = None
    lines: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    zones: dict[str, list[float]] = field(default_factory=dict)  # max, sum, frames

    def roll(self, now: float) -> CountsData | None:
        """Call before adding a frame's counts: the report of the interval that
        ``now`` closes, if any."""
        bucket = math.floor(now / self.interval_s) * self.interval_s
        if self.start is None:
            self.start = bucket
            return None
        if now < self.start + self.interval_s:
            return None
        report = self.report(partial=False)
        self.start = bucket
        return report

    def snapshot(self) -> AggregateState:
        return AggregateState(self.start, self.lines, self.zones)

    def restore(self, saved: AggregateState) -> None:
        self.start, self.lines, self.zones = saved.start, saved.lines, saved.zones

    def add_crossing(self, rule: str, direction: str, class_name: str) -> None:
        counts = self.lines.setdefault(rule, {}).setdefault(direction, {})
        counts[class_name] = counts.get(class_name, 0) + 1

    def add_occupancy(self, rule: str, count: int) -> None:
        stats = self.zones.setdefault(rule, [0.0, 0.0, 0.0])
        stats[0] = max(stats[0], count)
        stats[1] += count
        stats[2] += 1

    def report(self, partial: bool) -> CountsData | None:
        """This interval's counts, then reset; None before the first frame."""
        if self.start is None:
            return None
        report = CountsData(
            start=self.start,
            end=self.start + self.interval_s,
            partial=partial,
            lines={
                rule: {d: dict(c) for d, c in by_direction.items()}
                for rule, by_direction in self.lines.items()
            },
            zones={
                rule: ZoneSummary(int(s[0]), round(s[1] / s[2], 3))
                for rule, s in self.zones.items()
                if s[2]
            },
        )
        self.lines, self.zones = {}, {}
        return report
