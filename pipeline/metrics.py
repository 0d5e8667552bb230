"""Measurements a stage keeps about itself and reports in its heartbeats."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import msgspec

from pipeline.clock import Clock, WallClock
from pipeline.registry import Sample


class FrameAges:
    """Frame age (now − capture time) of the frames seen in the last ``window_s``
    seconds: the number that shows whether latency is bounded *now*.

    The window is measured in time, not frames, so a slow stage (a few frames a
    second) does not go on reporting a start-up spike for half a minute, and a fast
    one does not forget a stall after a fraction of a second. ``max_frames`` only
    bounds memory."""

    def __init__(
        self,
        window_s: float = 10.0,
        max_frames: int = 4096,
        clock: Clock | None = None,
    ) -> None:
        self._window_s = window_s
        self._clock = clock or WallClock()
        self._seen: deque[tuple[float, float]] = deque(maxlen=max_frames)

    def add(self, capture_ts: float, now: float | None = None) -> None:
        now = self._clock.now() if now is None else now
        self._seen.append((now, now - capture_ts))

    def quantiles(self, now: float | None = None) -> tuple[float, float]:
        """p50 and p99 over the window (0 before the first frame). The newest frame
        is always kept, so a stream that stopped still reports the age its last
        frame had instead of looking perfectly fresh."""
        horizon = (self._clock.now() if now is None else now) - self._window_s
        while len(self._seen) > 1 and self._seen[0][0] < horizon:
            self._seen.popleft()
        ages = sorted(age for _, age in self._seen)
        if not ages:
            return 0.0, 0.0
        return ages[len(ages) // 2], ages[min(len(ages) - 1, int(len(ages) * 0.99))]

    def report(
        self, prefix: str = "frame_age", now: float | None = None
    ) -> dict[str, float]:
        """``{prefix}_p50_s`` and ``{prefix}_p99_s`` (see ``quantiles``)."""
        p50, p99 = self.quantiles(now)
        return {f"{prefix}_p50_s": p50, f"{prefix}_p99_s": p99}


LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class HistogramReport(msgspec.Struct, frozen=True):
    """A histogram as it travels in heartbeats: bucket upper bounds (seconds), the
    count in each bucket plus one for the overflow, and the sum of all values."""

    buckets: list[float] = []
    counts: list[int] = []
    sum: float = 0.0


class Histogram:
    """A cumulative latency histogram that travels in heartbeats as plain numbers
    and becomes a Prometheus histogram in the supervisor."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS_S) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        for i, bound in enumerate(self.buckets):
            if seconds <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += seconds

    def report(self) -> HistogramReport:
        return HistogramReport(list(self.buckets), list(self.counts), self.total)


def frame_age_samples(
    p50: float, p99: float, camera: str, stage: str
) -> Iterable[Sample]:
    """The frame-age gauges of one stage of one camera."""
    for quantile, value in (("0.5", p50), ("0.99", p99)):
        yield Sample(
            "frame_age_seconds",
            "gauge",
            "Now minus capture time, over recent frames",
            {"camera": camera, "stage": stage, "quantile": quantile},
            float(value),
        )


# families that more than one stage kind adds to: their help said once
def frames_dropped(camera: str, reason: str, count: float) -> Sample:
    """One reason's count in ``frames_dropped`` (``camera`` "all" for a stage
    that serves every camera)."""
    return Sample(
        "frames_dropped",
        "counter",
        "Frames dropped, by reason",
        {"camera": camera, "reason": reason},
        count,
    )


def frames_through(stage: str, camera: str, count: float) -> Sample:
    """Frames a stage passed on for a camera (decode, track)."""
    return Sample(
        "frames",
        "counter",
        "Frames out of decode / through detect and track",
        {"stage": stage, "camera": camera},
        count,
    )
