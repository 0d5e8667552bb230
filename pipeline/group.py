"""Camera groups: several cameras' stages of one kind in one process.

Each stage process pays for an interpreter, its imports and its config (about 30
MiB that are its own, measured with ``framechain bench memory``), whatever it
serves. A group process runs one member stage per camera, each exactly the stage a
process of its own would run, with its own sockets, state and recovery; only the
process is shared. The member's ports are named ``<member>/<port>`` in the group's
plan, so the runtime keeps every member's links apart.

Isolation: a member reads, drops and counts its own bad input, as a lone stage does.
A member that raises (a bug) ends the group process like a lone stage's crash, and
the supervisor restarts the group: every member then recovers the way a restarted
process of its own does (decode re-sends what track did not acknowledge, track
resumes from its checkpoint), so a camera's crash costs the others of its group one
restart and nothing else.

Flow: a member with a blocking output (a file source, which waits for its decode) is
asked to produce only when that output can take a message, so one camera's slow
consumer does not hold up the other cameras of its group.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec

from pipeline.stage import Emit, Received, Stage
from pipeline.stageplan import StagePlan

SEPARATOR = "/"
MEMBERS_KEY = "members"  # in a group's heartbeat stats: each member's own
HELD_RETRY_S = 0.005


def member_port(member: str, port: str) -> str:
    return f"{member}{SEPARATOR}{port}"


class GroupStats(msgspec.Struct, kw_only=True):
    """A group's own stats: each member's, by member (process) name."""

    members: dict[str, dict[str, Any]] = {}


@dataclass
class _Member:
    name: str
    stage: Stage
    blocking_outputs: tuple[str, ...]  # group port names produce() must wait for
    next_tick: float = 0.0
    progress_since: float = 0.0
    last_progress: tuple[int, bool] = (0, False)


@dataclass
class GroupStage(Stage):
    """The members' hooks, called in turn; ports are ``<member>/<port>``."""

    members: list[_Member]
    ready: Callable[[str], bool] = field(default=lambda _port: True)
    held: bool = False

    def __post_init__(self) -> None:
        stages = [m.stage for m in self.members]
        self.max_batch = sum(s.max_batch for s in stages)
        self.max_wait_s = min(s.max_wait_s for s in stages)
        self.tick_interval = min(s.tick_interval for s in stages)
        self._by_name = {m.name: m for m in self.members}

    # -- routing ------------------------------------------------------------------
    def _split(self, port: str) -> tuple[_Member, str]:
        name, _, inner = port.partition(SEPARATOR)
        return self._by_name[name], inner

    def _emits(self, member: _Member, emits: Iterable[Emit]) -> list[Emit]:
        return [
            Emit(member_port(member.name, e.port), e.message, e.parts) for e in emits
        ]

    # -- hooks ----------------------------------------------------------------------
    def outputs_ready(self, ready: Callable[[str], bool]) -> None:
        self.ready = ready

    def setup(self) -> None:
        for member in self.members:
            member.stage.setup()

    def serves(self, stream_id: str) -> bool:
        return any(m.stage.serves(stream_id) for m in self.members)

    def serves_on(self, port: str, stream_id: str) -> bool:
        member, _ = self._split(port)
        return member.stage.serves(stream_id)

    def accepts(self, port: str) -> bool:
        member, inner = self._split(port)
        return member.stage.accepts(inner)

    def produce(self) -> Iterable[Emit]:
        out: list[Emit] = []
        self.held = False
        for member in self.members:
            if all(self.ready(port) for port in member.blocking_outputs):
                out += self._emits(member, member.stage.produce())
            else:
                self.held = True  # its consumer is full: asked again shortly
        return out

    def process(self, batch: Sequence[Received]) -> Iterable[Emit]:
        by_member: dict[str, list[Received]] = {}
        for received in batch:  # the runtime dropped what a member does not serve
            member, inner = self._split(received.port)
            by_member.setdefault(member.name, []).append(
                Received(inner, received.message, received.parts)
            )
        out: list[Emit] = []
        for name, received_here in by_member.items():
            member = self._by_name[name]
            size = max(1, member.stage.max_batch)
            for start in range(0, len(received_here), size):
                chunk = received_here[start : start + size]
                out += self._emits(member, member.stage.process(chunk))
        return out

    def tick(self, now: float) -> Iterable[Emit]:
        out: list[Emit] = []
        for member in self.members:
            if now >= member.next_tick:
                member.next_tick = now + member.stage.tick_interval
                out += self._emits(member, member.stage.tick(now))
        return out

    def next_awake(self) -> float | None:
        awake = [a for m in self.members if (a := m.stage.next_awake()) is not None]
        if self.held:
            # where a lone stage would block in its send, polling the full queue,
            # a held member is asked again after this long
            awake.append(HELD_RETRY_S)
        return min(awake) if awake else None

    def wake_fds(self) -> list[int]:
        return [fd for m in self.members for fd in m.stage.wake_fds()]

    def stop(self) -> Iterable[Emit]:
        out: list[Emit] = []
        for member in self.members:
            out += self._emits(member, member.stage.stop())
        return out

    def reload(self) -> None:
        for member in self.members:
            member.stage.reload()

    def finished(self) -> bool:
        return all(m.stage.finished() for m in self.members)

    def input_ended(self) -> bool:
        return all(m.stage.input_ended() for m in self.members)

    def progress(self) -> tuple[int, bool]:
        """The member stalled longest, so one stuck camera is seen (and its group
        restarted) even while the others make progress: its count and that it
        waits; the total and False when none waits."""
        now = time.monotonic()
        stuck: _Member | None = None
        for member in self.members:
            done, waiting = member.stage.progress()
            if not waiting or done != member.last_progress[0]:
                member.progress_since = now
            member.last_progress = (done, waiting)
            if waiting and (
                stuck is None or member.progress_since < stuck.progress_since
            ):
                stuck = member
        if stuck is None:
            return sum(m.last_progress[0] for m in self.members), False
        return stuck.last_progress[0] * len(self.members) + self.members.index(
            stuck
        ), True

    def stats(self) -> GroupStats:
        members = {}
        for member in self.members:
            own = member.stage.stats()
            members[member.name] = msgspec.to_builtins(own) if own is not None else {}
        return GroupStats(members=members)

    def close(self) -> None:
        errors = []
        for member in self.members:
            try:
                member.stage.close()
            except Exception as e:  # close every member, then report the first
                errors.append(e)
        if errors:
            raise errors[0]


def group_plan(name: str, members: Mapping[str, StagePlan]) -> StagePlan:
    """One process's plan for several members' plans (keyed by member name): their
    endpoints with ports renamed ``<member>/<port>``, their lossy ports likewise,
    and a factory building each member's stage in the group process."""
    import zmq

    endpoints = []
    lossy: set[str] = set()
    best_effort: set[str] = set()
    blocking: dict[str, tuple[str, ...]] = {}
    for member, plan in members.items():
        endpoints += [
            replace(
                e,
                port=member_port(member, e.port),
                aliases=tuple(member_port(member, a) for a in e.aliases),
            )
            for e in plan.endpoints
        ]
        lossy |= {member_port(member, p) for p in plan.lossy_ports}
        best_effort |= {member_port(member, p) for p in plan.best_effort_ports}
        blocking[member] = tuple(
            member_port(member, e.port)
            for e in plan.endpoints
            if e.socket_type == zmq.PUSH
            and e.port not in plan.lossy_ports | plan.best_effort_ports
        )
    factories = {member: plan.build for member, plan in members.items()}

    def build() -> Stage:
        return GroupStage(
            [_Member(m, factory(), blocking[m]) for m, factory in factories.items()]
        )

    return StagePlan(
        name,
        build,
        tuple(endpoints),
        lossy_ports=frozenset(lossy),
        best_effort_ports=frozenset(best_effort),
        drain_timeout_s=max(p.drain_timeout_s for p in members.values()),
        exit_when_finished=all(p.exit_when_finished for p in members.values()),
        drains=any(p.drains for p in members.values()),
        record={
            member_port(m, port): path
            for m, plan in members.items()
            for port, path in plan.record.items()
        },
    )


# runtime figures a member's view keeps (the rest count the whole process)
_MEMBER_RUNTIME = ("input_ended", "last_error", "problem")


def member_views(stats: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each member's stats from a group's heartbeat, as a process of its own would
    report them: its own stats, the drops of its own ports, the process's end of
    input and last error, and an even share of the process's CPU time (so totals
    over the chain stay right). Empty for a process that is not a group."""
    members = stats.get(MEMBERS_KEY)
    if not isinstance(members, dict) or not members:
        return {}
    dropped = stats.get("dropped", {}) or {}
    cpu_s = float(stats.get("cpu_s", 0.0)) / len(members)
    views = {}
    for name, own in members.items():
        prefix = name + SEPARATOR
        views[name] = {
            **{k: stats[k] for k in _MEMBER_RUNTIME if k in stats},
            "cpu_s": cpu_s,
            "dropped": {
                port[len(prefix) :]: n
                for port, n in dropped.items()
                if port.startswith(prefix)
            },
            **(own if isinstance(own, dict) else {}),
        }
    return views


def listed(
    name: str, entry: Mapping[str, Any], members: Sequence[str]
) -> dict[str, Mapping[str, Any]]:
    """A process's entry in the supervisor's snapshot (state, restarts, stats),
    or, for a camera group, one per member with the member's stats: metrics,
    readiness and the summary then see every camera's stages as if each ran in a
    process of its own."""
    if not members:
        return {name: entry}
    views = member_views(entry["stats"])
    return {m: {**entry, "stats": views.get(m, {})} for m in members}
