"""What every event sink shares: receive events, write them in batches, finish when
every camera's stream has ended.

Contract for subclasses: ``write(events)`` is called with events in arrival order and
must be idempotent by ``event_id`` (redelivery after a restart stores nothing twice);
``flush()`` is called after every received batch, at every tick and before close, and
makes everything written so far durable.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Sequence

from pipeline.clock import Clock, WallClock
from pipeline.messages import EndOfStream, Event
from pipeline.stage import Emit, Received, Stage
from stages.sinks.stats import SinkStats


class EventSink(Stage):
    max_batch = 256

    def __init__(self, streams: Iterable[str], clock: Clock | None = None) -> None:
        self.streams = set(streams)
        self.clock = clock or WallClock()
        self._ended: set[str] = set()
        self.received = 0

    @abstractmethod
    def write(self, events: Sequence[Event]) -> None: ...

    @abstractmethod
    def flush(self) -> None: ...

    def process(self, batch: Sequence[Received]) -> Iterable[Emit]:
        events = [item.message for item in batch if isinstance(item.message, Event)]
        if events:
            self.write(events)
            self.received += len(events)
        self._ended.update(
            item.message.stream_id
            for item in batch
            if isinstance(item.message, EndOfStream)
        )
        self.flush()
        return ()

    def tick(self, now: float) -> Iterable[Emit]:
        self.flush()
        return ()

    def input_ended(self) -> bool:
        """Every stream's end has arrived: nothing more is in flight towards this
        sink (the supervisor's ordered stop waits for it; a network sink may still
        be delivering its spool)."""
        return self._ended >= self.streams

    def finished(self) -> bool:
        return self.input_ended()

    def stats(self) -> SinkStats:
        return SinkStats(events=self.received)
