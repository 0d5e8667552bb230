"""The supervisor's record of its stage processes, and what it knows of their
roles in the chain."""

from __future__ import annotations

import signal
import subprocess
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from pipeline.registry import read_stats
from pipeline.stageplan import RuntimeStats

StageState = Literal["starting", "running", "stopping", "stopped"]
"""What a stage process says of itself in its heartbeats (``runtime``)."""

ProcessState = Literal[
    "pending",
    "starting",
    "running",
    "stopping",
    "stopped",
    "done",
    "restarting",
    "failed",
]
"""The supervisor's view of a stage: ``pending`` until first started; then what
its heartbeats say (``StageState``) while it runs; ``done`` after exit 0;
``stopped`` after another exit at a stop; ``restarting`` while a restart is due;
``failed`` when it is given up (a service's stays so, anything else ends the run).
``/readyz`` also shows ``unresponsive`` and ``stalled``, from a running stage's
heartbeats, without changing this state."""

_REPORTED: frozenset[str] = frozenset(get_args(StageState))


def reported_state(text: str) -> StageState | None:
    """A heartbeat's state, or None when it is none of ``StageState``."""
    return text if text in _REPORTED else None  # type: ignore[return-value]


@dataclass
class MonitoredProcess:
    """One stage process and its restart history."""

    name: str
    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: deque[float] = field(default_factory=deque)
    next_start: float = 0.0
    started: float = 0.0
    last_beat: float = 0.0
    state: ProcessState = "pending"
    exit_code: int | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def stalled_s(self) -> float:
        """How long its last heartbeat says it has had work and made no progress."""
        return read_stats(self.stats, RuntimeStats).stalled_s

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exited(self, code: int) -> None:
        """Record the end of a stage that is not restarted: done on status 0."""
        self.exit_code = code
        self.state = "done" if code == 0 else "stopped"


@dataclass(frozen=True, slots=True)
class StageRoles:
    """What the supervisor must know of its stages, derived from their kinds:
    ``terminal``: the chain's ends, which exit by themselves once done (the run is
    over when they all are); ``ends_streams``: the stream heads that SIGUSR1 ends
    at an orderly stop, in the order they get it (further down the chain first:
    a head's own end must come after the one below it, which then drops it);
    ``services``: the stages beside the chain, whose failure is reported but
    neither ends the run nor holds its start or end;
    ``reloads``: the stages SIGHUP reloads; ``restart_with``: the stages restarted
    whenever a given one is (a decode's capture); ``members``: the stages each
    camera group process runs (``pipeline/group.py``)."""

    terminal: frozenset[str] = frozenset()
    services: frozenset[str] = frozenset()
    ends_streams: tuple[str, ...] = ()
    reloads: frozenset[str] = frozenset()
    restart_with: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    members: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


# a stage process's exit statuses (``pipeline.runtime``); EXIT_PERMANENT: a
# restart cannot help (``PermanentError``), so the supervisor ends the run
EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_PERMANENT = 0, 1, 2, 3
PERMANENT_EXITS = frozenset({EXIT_CONFIG, EXIT_PERMANENT})


def exit_reason(code: int) -> str:
    """How a process ended, in words."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"
