"""Reconnect pacing for live sources.

The rule: a first retry after ``initial_s``, each next delay ``factor`` times the
last up to ``max_s``, jittered by ±``jitter`` so that many cameras do not retry in
step, and never more than one attempt per second. Two things depend on how the
connection that just failed went:

- it had delivered frames for ``reset_after_s`` (a healthy camera): the count
  starts over, and for the first ``outage_fast_s`` of the outage no delay exceeds
  ``outage_cap_s``. A camera that was working comes back within that cap (plus
  jitter and the time to connect) of its server's return, however often it
  dropped before.
- it failed sooner (wrong stream, a server that accepts and closes at once): the
  count goes on, and the delays keep growing; such a camera is not hammered.
"""

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
    reset_after_s: float = 10.0
    outage_cap_s: float = 5.0
    outage_fast_s: float = 60.0
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0
    delivering_since: float | None = None  # first frame of this connection
    outage_since: float | None = None  # a healthy camera's outage began

    def delivering(self, now: float) -> None:
        """The connection delivered a frame (cheap: called for every packet)."""
        if self.delivering_since is None:
            self.delivering_since = now

    def next_delay(self, now: float) -> float:
        """Seconds to wait before the next attempt, after one more failure."""
        if (
            self.delivering_since is not None
            and now - self.delivering_since >= self.reset_after_s
        ):
            self.failures, self.outage_since = 0, now
        self.delivering_since = None
        base = min(self.initial_s * self.factor**self.failures, self.max_s)
        if self.outage_since is not None:
            if now - self.outage_since < self.outage_fast_s:
                base = min(base, self.outage_cap_s)
            else:
                self.outage_since = None
        self.failures += 1
        delay = base * (1 + self.rng.uniform(-self.jitter, self.jitter))
        return max(MIN_INTERVAL_S, delay)
