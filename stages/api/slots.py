"""Long answers (live pictures, the event stream) held open per client address,
bounded, so that one client cannot take every connection the service has."""

from __future__ import annotations

import threading
from collections import Counter


class ClientSlots:
    def __init__(self, per_client: int) -> None:
        self.per_client = per_client
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def take(self, client: str) -> bool:
        """One more for ``client``; False when it holds its share."""
        with self._lock:
            if self._open[client] >= self.per_client:
                return False
            self._open[client] += 1
            return True

    def give_back(self, client: str) -> None:
        with self._lock:
            self._open[client] -= 1
            if self._open[client] <= 0:
                del self._open[client]

    def total(self) -> int:
        with self._lock:
            return sum(self._open.values())
