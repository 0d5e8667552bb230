"""The contract between a stage and the runtime that drives it.

A stage is a plain object: it never opens sockets, sleeps or installs signal handlers,
so it can be tested by calling its methods. The runtime (``runtime.py``) owns sockets,
heartbeats, signals and timing, and calls the hooks below.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import msgspec

from pipeline.messages import Message
from pipeline.transport import Buffer


@dataclass(frozen=True, slots=True)
class Received:
    """A message as it arrived on input ``port``. ``parts`` are valid only during the
    ``process`` call that receives them."""

    port: str
    message: Message
    parts: Sequence[Buffer] = ()


@dataclass(frozen=True, slots=True)
class Emit:
    """A message for output ``port`` (the runtime maps ports to sockets)."""

    port: str
    message: Message
    parts: Sequence[Buffer] = ()


class Doorbell:
    """A pipe a helper thread rings when it has queued work for ``produce()``.

    The runtime sleeps in one poll on the stage's sockets; work a thread puts in a
    ``queue.Queue`` cannot wake that poll, and polling the queue on a short timer
    costs every idle camera a few percent of a core. Ring after putting, so the
    poll wakes for every item and never for nothing. The runtime empties it. It lives
    as long as the process: closing it under a thread still ringing could let the
    thread write into whatever file reuses the descriptor."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def fileno(self) -> int:
        return self._read

    def ring(self) -> None:
        try:
            os.write(self._write, b"\0")
        except BlockingIOError:
            pass  # already full of rings: the poll will wake anyway


def drain_fd(fd: int) -> None:
    """Empty a non-blocking pipe (a doorbell, the signal wake-up pipe)."""
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, OSError):
        pass


class Stage(ABC):
    """One step of the chain. Hooks, in the order the runtime calls them:

    - ``setup()``: once, before any message; heavy imports and model loads go here.
    - ``produce()``: sources only, whenever the stage's outputs can take more; returns
      nothing when there is nothing to send yet.
    - ``process(batch)``: with 1..``max_batch`` messages that arrived on ports for which
      ``accepts(port)`` was true.
    - ``tick(now)``: at least every ``tick_interval`` seconds, for timers. The runtime
      sleeps until the next tick, heartbeat, ``next_awake()``, input, doorbell or
      signal, whichever comes first: an idle stage costs nothing between them.
    - ``stop()``: once, when the process is asked to stop; sources end their streams.
    - ``reload()``: on SIGHUP, between messages.
    - ``close()``: once, last, even after an error.

    ``finished()`` true makes the runtime exit the process with status 0.
    """

    max_batch: int = 1
    max_wait_s: float = 0.0
    tick_interval: float = 0.5

    def setup(self) -> None:
        """Acquire resources. Called once in the stage's own process."""

    def refused(self, port: str, error: Exception) -> bool:
        """A message on ``port`` failed to parse or validate, and is dropped; the
        runtime counts it (``invalid_messages``). True: the stage reported it
        itself (a sink logs an event it cannot store as an error), so the
        runtime does not log it again."""
        return False

    def serves(self, stream_id: str) -> bool:
        """Whether messages of ``stream_id`` are this stage's; the runtime drops and
        counts any other (a forged or misrouted message)."""
        return True

    def serves_on(self, port: str, stream_id: str) -> bool:
        """``serves`` for a message that arrived on ``port`` (a camera group
        asks the member that owns the port)."""
        return self.serves(stream_id)

    def accepts(self, port: str) -> bool:
        """Whether the runtime may read ``port`` now; false applies backpressure."""
        return True

    def produce(self) -> Iterable[Emit]:
        return ()

    @abstractmethod
    def process(self, batch: Sequence[Received]) -> Iterable[Emit]:
        """Handle received messages and return what to send on."""

    def tick(self, now: float) -> Iterable[Emit]:
        return ()

    def next_awake(self) -> float | None:
        """Seconds until ``produce`` has something to send (None: no timer)."""
        return None

    def wake_fd(self) -> int | None:
        """A file descriptor (a ``Doorbell``) that becomes readable when a helper
        thread queued work for ``produce``; the runtime polls it with the inputs."""
        return None

    def wake_fds(self) -> list[int]:
        """Every such descriptor (a camera group has one per member)."""
        fd = self.wake_fd()
        return [] if fd is None else [fd]

    def outputs_ready(self, ready: Callable[[str], bool]) -> None:
        """Called once before ``setup`` with a test of whether an output port can
        take a message now; a stage serving several streams uses it to produce
        only for those whose consumer keeps up."""

    def stop(self) -> Iterable[Emit]:
        return ()

    def reload(self) -> None:
        """On SIGHUP: re-read what can change without a restart (rules)."""

    def finished(self) -> bool:
        return False

    def input_ended(self) -> bool:
        """Every stream's end has arrived here: nothing more is in flight towards
        this stage (the supervisor's ordered stop waits for it at the chain's
        ends)."""
        return False

    def progress(self) -> tuple[int, bool]:
        """(a count that grows with the work done, whether work waits now). A
        stage with work waiting whose count stands still is stalled; the
        supervisor restarts it after ``supervisor.stall_timeout_s``."""
        return 0, False

    def stats(self) -> msgspec.Struct | None:
        """What the stage reports in its heartbeats: a struct of its kind's, whose
        fields the kind's metrics and summary read back (``StageKind``)."""
        return None

    def close(self) -> None:
        """Release resources. Called once, last, also after an error."""
