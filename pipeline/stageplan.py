"""What a stage process is made of before it runs: its plan (links and the factory
of its stage object), and what the runtime reports of it besides the stage's own
statistics."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from pipeline.errors import PermanentError
from pipeline.stage import Stage
from pipeline.transport import Endpoint

RUN_ID_VARIABLE = "FRAMECHAIN_RUN_ID"
"""The environment variable in which the supervisor gives every stage the id of
its run: a stage restarted within a run resumes exactly where it was; one started
by a later run decides what of an earlier run's checkpoint still holds."""


@dataclass(frozen=True)
class StagePlan:
    """Everything needed to run one stage process: its name, a factory for the
    stage object (called inside the process) and its links (from the ports its
    kind declares, ``framechain.plan``)."""

    name: str
    build: Callable[[], Stage]
    endpoints: tuple[Endpoint, ...] = ()
    lossy_ports: frozenset[str] = frozenset()
    # outputs on which any message, not only media, is dropped when the consumer
    # cannot take it now (a service's feed)
    best_effort_ports: frozenset[str] = frozenset()
    drain_timeout_s: float = 8.0
    # False: exits as soon as it is asked to stop, since nothing queued for it is
    # owed to anyone (a service's feed is best effort)
    drains: bool = True
    # Only the chain's last stages exit by themselves once finished. Every other stage
    # stays up, idle, until it is stopped, so that nothing it queued for a slower
    # neighbour is cut off by its exit, and it can still answer a re-send.
    exit_when_finished: bool = False
    # input port -> recording file: every message received there is also written
    # to it (``links.record``), for replay without the stages before it.
    record: dict[str, Path] = field(default_factory=dict)


class RuntimeStats(msgspec.Struct, kw_only=True):
    """What the runtime reports of every stage, besides the stage's own stats."""

    received: int = 0
    sent: int = 0
    invalid_messages: int = 0  # headers that failed to parse or validate
    heartbeats_dropped: int = 0
    dropped: dict[str, int] = {}  # messages dropped by full lossy outputs, by port
    cpu_s: float = 0.0
    input_ended: bool = False  # ``Stage.input_ended()``
    # seconds the stage has had work waiting (``Stage.progress``) without making
    # progress; the supervisor restarts a stage stalled for too long
    stalled_s: float = 0.0
    last_error: str = ""  # what ended the process, in its last heartbeat
    # what the operator must hear when the run ends, though the stage went on (a
    # file read only in part); a stage's own stats set it
    problem: str = ""


def merged_stats(runtime: RuntimeStats, own: msgspec.Struct | None) -> dict[str, Any]:
    """A heartbeat's statistics: the runtime's, and the stage's own over them
    (a stage may set ``problem``).

    Raises:
        PermanentError: a stage stat has a runtime stat's name and another type
            (a kind's bug: every heartbeat would be unreadable).
    """
    stats: dict[str, Any] = msgspec.to_builtins(runtime)
    if own is None:
        return stats
    clash = clashing_stats(type(own))
    if clash:
        raise PermanentError(
            f"{type(own).__name__} reports {', '.join(clash)}, a runtime statistic "
            "of another type; rename the field in the stage's stats"
        )
    stats.update(msgspec.to_builtins(own))
    return stats


@functools.cache
def clashing_stats(stats_type: type[msgspec.Struct]) -> tuple[str, ...]:
    """The fields of a stage's stats struct that a runtime stat of another type
    has the name of: a property of the type, so found once per type rather than
    at every heartbeat."""
    runtime = {f.name: f.type for f in msgspec.structs.fields(RuntimeStats)}
    return tuple(
        f.name
        for f in msgspec.structs.fields(stats_type)
        if f.name in runtime and f.type != runtime[f.name]
    )
