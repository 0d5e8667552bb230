"""Delivery from the end of a stream's chain (track) to every sink, with
acknowledgement, so that a sink that dies loses nothing.

Every message for the sinks (events, the end of stream) is kept in the outbox, and
in the stage's checkpoint, until every sink has stored it. After a batch the stage
sends each sink a ``Mark``; a sink answers ``Stored`` once all it received before
the mark is durable, and the messages before that mark leave the outbox. A sink
answers with its ``session``: when a sink's session changes (it was restarted and
may have lost what it had received), every message still in the outbox goes to it
again, followed by a new mark, and only answers to that mark or later ones count
for it. ZeroMQ keeps a pipe's order, so a mark answered means all before it was
received. Sinks store by event id, so what arrives twice is stored once.

A sink is sent messages only once it has answered a mark: until then its session
is unknown, and its first answer brings it everything in the outbox anyway, so a
message sent to it before would arrive twice (stored once, but counted and
forwarded twice).

A mark goes out after each batch with something new and at least once a second
(``tick``), so that a restarted sink is found even when the stream is idle or
over; the end of stream is sent again to every new session, so a sink restarted
after the end still finishes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pipeline.messages import EndOfStream, Event, Mark, Message, Stored, decode, encode
from pipeline.stage import Emit
from pipeline.topology import route

MARK_INTERVAL_S = 1.0


def sink_port(sink: str) -> str:
    """The output port of the link to one sink."""
    return route("events", sink)


@dataclass(slots=True)
class _Cursor:
    session: int | None = None
    floor: int = 0  # answers to earlier marks belong to an older session
    stored: int = -1  # the latest mark this session answered


class Outbox:
    def __init__(
        self, stream_id: str, sinks: Sequence[str], origin: int, keep: bool = True
    ) -> None:
        """``origin``: this process's id in its marks (answers to another
        process's marks are ignored); ``keep`` false: the sinks do not answer
        (a replay), so nothing is kept for them."""
        self.stream_id = stream_id
        self.keep = keep
        self.origin = origin
        # (the next mark's token, the message, its bytes for the checkpoint: each
        # is encoded once, not at every checkpoint while it waits)
        self.entries: deque[tuple[int, Message, bytes]] = deque()
        self.cursors = {sink: _Cursor() for sink in sinks}
        self.token = 0  # of the next mark
        self.end: EndOfStream | None = None
        self.resent = 0
        self.changed = False  # since the last checkpoint
        self._last_mark = float("-inf")

    def __len__(self) -> int:
        return len(self.entries)

    def restore(self, encoded: Iterable[bytes], events_only: bool = False) -> None:
        """The messages a checkpoint held: every sink gets them again.
        ``events_only``: the stream starts over, so an end of stream it held
        belongs to an earlier pass and must not end this one."""
        for data in encoded:
            message = decode(data)
            if events_only and not isinstance(message, Event):
                continue
            self.entries.append((self.token, message, data))
            if isinstance(message, EndOfStream):
                self.end = message

    def encoded(self) -> list[bytes]:
        return [data for _, _, data in self.entries]

    def add(self, messages: Iterable[Message]) -> list[Emit]:
        """Keep ``messages`` and send them to every sink."""
        emits: list[Emit] = []
        for message in messages:
            if self.keep:
                self.entries.append((self.token, message, encode(message)))
                self.changed = True
            if isinstance(message, EndOfStream):
                self.end = message
            # A sink not heard from yet gets everything at its first answer
            # (``stored``); sent now as well, it would get it twice.
            emits.extend(
                Emit(sink_port(sink), message)
                for sink, cursor in self.cursors.items()
                if cursor.session is not None or not self.keep
            )
        return emits

    def mark(self, now: float) -> list[Emit]:
        """A mark to every sink."""
        mark = Mark(self.stream_id, self.origin, self.token)
        self.token += 1
        self._last_mark = now
        return [Emit(sink_port(sink), mark) for sink in self.cursors]

    def tick(self, now: float) -> list[Emit]:
        """The once-a-second mark."""
        if now - self._last_mark < MARK_INTERVAL_S:
            return []
        return self.mark(now)

    def stored(self, answer: Stored) -> list[Emit]:
        """A sink's answer; for a new session, what it must get again."""
        cursor = self.cursors.get(answer.sink)
        if (
            cursor is None
            or answer.origin != self.origin
            or answer.stream_id != self.stream_id
        ):
            return []
        if cursor.session != answer.session:
            cursor.session, cursor.stored = answer.session, -1
            port = sink_port(answer.sink)
            emits = [Emit(port, message) for _, message, _ in self.entries]
            if self.end is not None and not any(
                isinstance(m, EndOfStream) for _, m, _ in self.entries
            ):
                emits.append(Emit(port, self.end))
            self.resent += len(emits)
            cursor.floor = self.token
            emits.append(Emit(port, Mark(self.stream_id, self.origin, self.token)))
            self.token += 1
            return emits
        if answer.token >= cursor.floor and answer.token > cursor.stored:
            cursor.stored = answer.token
            self._trim()
        return []

    def _trim(self) -> None:
        stored = min(c.stored for c in self.cursors.values())
        while self.entries and self.entries[0][0] <= stored:
            self.entries.popleft()
            self.changed = True

    def all_stored(self) -> bool:
        return not self.entries
