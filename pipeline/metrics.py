"""Measurements a stage keeps about itself and reports in its heartbeats."""

from __future__ import annotations

import time
from collections import deque


class FrameAges:
    """Frame age (now − capture time) over the last ``size`` frames: the number that
    shows whether latency is bounded (R9, R10)."""

    def __init__(self, size: int = 256) -> None:
        self._ages: deque[float] = deque(maxlen=size)

    def add(self, capture_ts: float, now: float | None = None) -> None:
        self._ages.append((time.time() if now is None else now) - capture_ts)

    def report(self, prefix: str = "frame_age") -> dict[str, float]:
        """``{prefix}_p50_s`` and ``{prefix}_p99_s`` (0 before the first frame)."""
        ages = sorted(self._ages)
        if not ages:
            return {f"{prefix}_p50_s": 0.0, f"{prefix}_p99_s": 0.0}
        return {
            f"{prefix}_p50_s": ages[len(ages) // 2],
            f"{prefix}_p99_s": ages[min(len(ages) - 1, int(len(ages) * 0.99))],
        }


LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


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

    def report(self) -> dict[str, object]:
        return {
            "buckets": list(self.buckets),
            "counts": list(self.counts),
            "sum": self.total,
        }
