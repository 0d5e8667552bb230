"""Time, injected: every stage reads the time through a ``Clock`` handed to it, so
a test advances a ``FakeClock`` instead of sleeping, and nothing depends on how
fast the machine running it is."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """``now()``: wall time in seconds since the epoch (timestamps that travel and
    are stored); ``monotonic()``: seconds for intervals and deadlines."""

    def now(self) -> float: ...

    def monotonic(self) -> float: ...


class WallClock:
    """The real clocks."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to; both readings advance together."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self._now = start
        self._monotonic = 0.0

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._monotonic += seconds
