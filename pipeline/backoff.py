"""Reconnect pacing: a first retry after ``initial_s``, multiplied by ``factor``
up to ``max_s``, each delay jittered by ±``jitter`` so that many cameras do not retry
in step, reset once a connection has stayed healthy for ``reset_after_s``. Never more
than one attempt per second."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

MIN_INTERVAL_S = 1.0


@dataclass
class Backoff:
    initial_s: float = 1.0
    factor: float = 2.0
    max_s: float = 30.0
    jitter: float = 0.2
    reset_after_s: float = 60.0
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0
    healthy_since: float | None = None

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt; counts one more failure."""
        base = min(self.initial_s * self.factor**self.failures, self.max_s)
        self.failures += 1
        self.healthy_since = None
        delay = base * (1 + self.rng.uniform(-self.jitter, self.jitter))
        return max(MIN_INTERVAL_S, delay)

    def connected(self, now: float) -> None:
        """A connection opened; the schedule resets once it has lasted long enough."""
        self.healthy_since = now

    def check_healthy(self, now: float) -> None:
        if (
            self.healthy_since is not None
            and now - self.healthy_since >= self.reset_after_s
        ):
            self.failures = 0
