"""The chain's delivery protocol, kept by the stage at the head of each stream
(decode): every message sent on is held until the end of the chain acknowledges it
(``Ack``, cumulative by sequence number), never more than a window at a time.

That window is the backpressure of the whole chain, the bound on its latency, and
what guarantees that a shared-memory slot is never reused while a frame in it is in
flight. If no acknowledgement arrives for ``resend_after_s`` (a stage died and was
restarted), the unacknowledged messages are sent again in order; downstream drops
what it already has, so a restart loses nothing and duplicates nothing.

For a live source the window adapts to frame age: frames in flight wait for the
ones ahead of them, so while acknowledged frames come back older than
``live_max_age_s`` the window shrinks by one, and while they come back in under
half of it, it grows again.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from pipeline.clock import Clock
from pipeline.stage import Emit

log = logging.getLogger(__name__)

LIVE_START_WINDOW = 2  # messages in flight from a live source before any ack
MAX_RESEND_WAIT_S = 60.0


class DeliveryWindow:
    """Messages sent and not yet acknowledged, by sequence number, oldest first."""

    def __init__(
        self,
        stream_id: str,
        clock: Clock,
        window: int,
        live_window: int,
        live_max_age_s: float,
        resend_after_s: float,
    ) -> None:
        self.stream_id = stream_id
        self.clock = clock
        self.file_window = window
        self.live_window = live_window
        self.live_max_age_s = live_max_age_s
        self.resend_after_s = resend_after_s
        self.live = False
        # starts small and grows while frames come back young: starting wide put a
        # slow detector's start-up frames 8 deep in flight, and that spike stayed in
        # the 10 s frame-age window
        self._live_limit = min(LIVE_START_WINDOW, live_window)
        self._acks_since_change = 0
        self.outstanding: OrderedDict[int, Emit] = OrderedDict()
        self._last_progress = clock.monotonic()
        self._resend_wait = resend_after_s  # doubles per silent re-send
        self._acknowledged = False
        self.resent = 0

    @property
    def limit(self) -> int:
        """How many messages may be in flight now."""
        return self._live_limit if self.live else self.file_window

    def has_room(self) -> bool:
        return len(self.outstanding) < self.limit

    def __len__(self) -> int:
        return len(self.outstanding)

    def sent(self, seq: int, emit: Emit) -> None:
        self.outstanding[seq] = emit

    def acknowledge(self, seq: int) -> None:
        """Everything up to ``seq`` is done downstream."""
        now = self.clock.now()
        while self.outstanding and next(iter(self.outstanding)) <= seq:
            _, emit = self.outstanding.popitem(last=False)
            self._last_progress = self.clock.monotonic()
            self._acknowledged = True
            self._resend_wait = self.resend_after_s
            capture_ts = getattr(emit.message, "capture_ts", None)
            if self.live and capture_ts is not None:
                self._adapt(now - capture_ts)

    def due(self) -> list[Emit]:
        """The messages to send again: all in flight, when none was acknowledged
        for the current re-send wait; else nothing."""
        if not self.outstanding:
            return []
        if self.clock.monotonic() - self._last_progress < self._resend_wait:
            return []
        self._last_progress = self.clock.monotonic()
        self.resent += len(self.outstanding)
        # Before the first acknowledgement the stages after us may still be
        # starting (a model loading, 30 processes importing on 2 cores): re-send, but
        # that is no incident, and each silent try waits twice as long.
        level = logging.WARNING if self._acknowledged else logging.INFO
        log.log(
            level,
            "no acknowledgement for %.1fs: re-sending %d frames of %s from seq %d",
            self._resend_wait,
            len(self.outstanding),
            self.stream_id,
            next(iter(self.outstanding)),
        )
        self._resend_wait = min(2 * self._resend_wait, MAX_RESEND_WAIT_S)
        return list(self.outstanding.values())

    def _adapt(self, age: float) -> None:
        """Adjust the live window from the age of a frame just acknowledged: one
        step at a time, and only after a whole window of frames has shown the
        effect of the previous step."""
        self._acks_since_change += 1
        if self._acks_since_change < self._live_limit:
            return
        if age > self.live_max_age_s and self._live_limit > 1:
            self._live_limit -= 1
        elif age < self.live_max_age_s / 2 and self._live_limit < self.live_window:
            self._live_limit += 1
        else:
            return
        self._acks_since_change = 0
