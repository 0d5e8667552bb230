"""What every event sink shares: receive events, write them in batches, finish when
every camera's stream has ended.

Contract for subclasses: ``write(events)`` is called with events in arrival order and
must be idempotent by ``event_id`` (redelivery after a restart stores nothing twice);
``flush()`` is called after every received batch, at every tick and before close, and
makes everything written so far durable.

After each batch the sink answers every track's ``Mark`` in it with ``Stored``
(``pipeline.outbox``): only then may the track forget those events.
"""

from __future__ import annotations

import logging
import random
from abc import abstractmethod
from collections.abc import Iterable, Sequence

from pipeline.clock import Clock, WallClock
from pipeline.messages import EndOfStream, Event, Mark, Stored
from pipeline.stage import Emit, Received, Stage
from pipeline.topology import route
from stages.sinks.stats import SinkStats

log = logging.getLogger(__name__)


def stored_port(stream_id: str) -> str:
    """The output port of a sink's answers to one camera's track."""
    return route("stored", stream_id)


class EventSink(Stage):
    max_batch = 256
    name = "sink"  # the sink's name in the config, set by its kind's plan

    def __init__(self, streams: Iterable[str], clock: Clock | None = None) -> None:
        self.streams = set(streams)
        self.clock = clock or WallClock()
        self._ending: set[str] = set()  # the end of stream arrived
        self._ended: set[str] = set()  # ... and a mark after it was answered
        self.received = 0
        self.undecodable = 0  # events that arrived and could not be decoded
        # names this process in its answers: a restarted sink is a new session
        self.session = random.getrandbits(62)

    @abstractmethod
    def write(self, events: Sequence[Event]) -> None: ...

    @abstractmethod
    def flush(self) -> None: ...

    def process(self, batch: Sequence[Received]) -> Iterable[Emit]:
        events = [item.message for item in batch if isinstance(item.message, Event)]
        if events:
            self.write(events)
            self.received += len(events)
        self.flush()
        marks: dict[tuple[str, int], Mark] = {}
        for item in batch:
            message = item.message
            if isinstance(message, EndOfStream):
                self._ending.add(message.stream_id)
            elif self.holding():
                continue  # not all is stored: the track keeps it and marks again
            elif isinstance(message, Mark) and message.stream_id in self.streams:
                marks[message.stream_id, message.origin] = message
                if message.stream_id in self._ending:
                    # answered below: the track then knows its end is stored
                    self._ended.add(message.stream_id)
        return [
            Emit(
                stored_port(mark.stream_id),
                Stored(
                    self.name, self.session, mark.stream_id, mark.origin, mark.token
                ),
            )
            for mark in marks.values()
        ]

    def refused(self, port: str, error: Exception) -> bool:
        """An event that cannot be decoded cannot be stored: an error, counted
        (``framechain_events_undecodable_total``) and logged, at the 1st, 2nd,
        4th … so that a flood cannot fill the disk."""
        self.undecodable += 1
        if self.undecodable & (self.undecodable - 1) == 0:
            log.error(
                "sink %s: %d event(s) could not be decoded and are not stored "
                "(latest on %s: %s); a stage of another framechain version, a "
                "plugin missing in this process, or a forged message",
                self.name,
                self.undecodable,
                port,
                error,
            )
        return True

    def holding(self) -> bool:
        """Events received but not yet durable (a full disk): no mark is answered
        until they are."""
        return False

    def tick(self, now: float) -> Iterable[Emit]:
        self.flush()
        return ()

    def input_ended(self) -> bool:
        """Every stream's end has arrived and is stored, and the track was told
        so (a mark after it was answered): nothing more is in flight towards this
        sink (the supervisor's ordered stop waits for it; a network sink may still
        be delivering its spool)."""
        return self._ended >= self.streams

    def finished(self) -> bool:
        return self.input_ended()

    def stats(self) -> SinkStats:
        return SinkStats(events=self.received, undecodable=self.undecodable)
