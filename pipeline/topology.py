"""The chain's wiring, derived from the ports each stage kind declares.

A kind lists its ports: the streams its processes consume (``in``) and produce
(``out``), with the link options of each. Ends with the same stream name are
linked; nothing else names another kind. For each stream:

- its **producers** (kinds with only an ``out`` on it) feed its **steps** (kinds
  with both an ``in`` and an ``out`` on it, in registration order), which feed its
  **consumers** (only an ``in``): a step is spliced in between by declaring both
  ends, with no edit to the kinds around it;
- a camera's messages pass the processes that serve it: its own of each
  per-camera kind, and every process of a kind that is not per camera (detect,
  the sinks); a step with no process for a camera is passed by;
- the consumer's end binds ``<process>.<endpoint>`` (``track.cam1.in``) and the
  producers connect to it, unless the producer's port says it binds
  (``capture.cam1.out``); those names are what ``links.endpoints`` moves to tcp.

A producer addresses a message to one consumer with ``route(port, target)``
(``detections.cam1``, ``events.db``): the target is the consumer's camera or name,
or, for a consumer that serves every camera, the camera the message belongs to.
The bare port name sends to every consumer on it.

The chain's order (start order, the orderly stop, the config's sections) is a
topological order of the kinds over their downstream streams (those not marked
``upstream``, such as acknowledgements), ties kept in registration order.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pipeline.registry import Process, StageKind
    from pipeline.transport import LinkOptions

Direction = Literal["in", "out"]

FULL_FRAMES = "full"
"""A kind's pixel need for a camera: the decoded frame at its own size (anything
else a kind says it needs is a size object, such as the detector's model input)."""


def route(port: str, target: str) -> str:
    """The name of ``port`` addressed to one consumer: ``detections.cam1``."""
    return f"{port}.{target}"


@dataclass(frozen=True, slots=True)
class Port:
    """One end of a stream on a kind's processes.

    Attributes:
        name: the port as the stage sees it (``Received.port``, ``Emit.port``).
        stream: what flows; ends with the same stream link.
        direction: ``in`` (consumed) or ``out`` (produced).
        link: which of the config's link options apply (``frames``, ``packets``,
            ``events``), unless ``options`` gives them.
        binds: this end binds the endpoint (default: the consumer's end).
        endpoint: the bound endpoint's name after the process's:
            ``<process>.<endpoint>``.
        lossy: an ``out`` that drops media rather than wait for its consumer.
        best_effort: an ``out`` that drops any message its consumer cannot take
            now (a feed to a service, which must never hold the chain back).
        upstream: the stream flows against the chain (acknowledgements): not an
            edge of the chain's order.
    """

    name: str
    stream: str
    direction: Direction
    link: str = "frames"
    options: LinkOptions | None = None
    binds: bool | None = None
    endpoint: str = "in"
    lossy: bool = False
    best_effort: bool = False
    upstream: bool = False

    @property
    def bound(self) -> bool:
        return self.binds if self.binds is not None else self.direction == "in"


@dataclass(frozen=True, slots=True)
class WiredPort:
    """One socket of a process: its port, the endpoint it binds or connects to,
    and, for an ``out``, the routed names (``route``) that reach it."""

    port: Port
    endpoint: str
    bind: bool
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Link:
    stream: str
    producer: Process
    out: Port
    consumer: Process
    into: Port


def _link(stream: str, p: Process, out: Port, c: Process, into: Port) -> Link:
    """
    Raises:
        ValueError: neither end binds (a kind's ports are misdeclared).
    """
    if not (out.bound or into.bound):
        raise ValueError(
            f"stream {stream}: neither {p.name}'s {out.name} nor {c.name}'s "
            f"{into.name} binds"
        )
    return Link(stream, p, out, c, into)


def ports_on(kind: StageKind, stream: str, direction: Direction) -> list[Port]:
    return [p for p in kind.ports if p.stream == stream and p.direction == direction]


def streams(kinds: Iterable[StageKind]) -> list[str]:
    """Every stream some kind declares, in the order first declared."""
    return list(dict.fromkeys(p.stream for k in kinds for p in k.ports))


def stations(kinds: Sequence[StageKind], stream: str) -> list[list[StageKind]]:
    """The stream's producers, then each of its steps, then its consumers: the
    groups of kinds a message passes, in order."""
    producing = [k for k in kinds if ports_on(k, stream, "out")]
    consuming = [k for k in kinds if ports_on(k, stream, "in")]
    steps = [k for k in producing if k in consuming]
    groups = [
        [k for k in producing if k not in steps],
        *([s] for s in steps),
        [k for k in consuming if k not in steps],
    ]
    return [g for g in groups if g]


def upstream_streams(kinds: Iterable[StageKind]) -> set[str]:
    return {p.stream for k in kinds for p in k.ports if p.upstream}


def chain_order(kinds: Sequence[StageKind]) -> list[StageKind]:
    """``kinds`` (in registration order) in the chain's order, upstream first.

    Raises:
        ValueError: the downstream streams make a cycle.
    """
    index = {id(k): i for i, k in enumerate(kinds)}
    after: dict[int, set[int]] = defaultdict(set)
    before: dict[int, int] = defaultdict(int)
    backwards = upstream_streams(kinds)
    for stream in streams(kinds):
        if stream in backwards:
            continue
        for sources, targets in itertools.pairwise(stations(kinds, stream)):
            for a in sources:
                for b in targets:
                    if a is not b and index[id(b)] not in after[index[id(a)]]:
                        after[index[id(a)]].add(index[id(b)])
                        before[index[id(b)]] += 1
    ready = [i for i in range(len(kinds)) if not before[i]]
    order: list[int] = []
    while ready:
        ready.sort()
        i = ready.pop(0)
        order.append(i)
        for j in after[i]:
            before[j] -= 1
            if not before[j]:
                ready.append(j)
    if len(order) != len(kinds):
        stuck = sorted({kinds[i].name for i in range(len(kinds)) if i not in order})
        raise ValueError(
            f"the streams of stage kinds {', '.join(stuck)} make a cycle; mark the "
            "ports of a stream that flows back up the chain upstream=True"
        )
    return [kinds[i] for i in order]


@dataclass
class Wiring:
    """Every link of a config's processes (camera-group members one by one), and
    each process's sockets."""

    links: list[Link]
    cameras: tuple[str, ...]
    processes: list[Process] = field(default_factory=list)

    @classmethod
    def of(
        cls,
        kinds: Sequence[StageKind],
        processes: Sequence[Process],
        cameras: Sequence[str],
    ) -> Wiring:
        """Each camera's messages pass, along each stream, the processes that
        serve that camera: a step with no process for a camera is passed by."""
        members = [m for p in processes for m in p.each()]
        by_kind: dict[int, list[Process]] = defaultdict(list)
        for member in members:
            by_kind[id(member.kind)].append(member)
        links: dict[tuple[str, str, str, str], Link] = {}
        for stream in streams(kinds):
            groups = stations(kinds, stream)
            for camera in cameras:
                path = [
                    serving
                    for group in groups
                    if (
                        serving := [
                            m
                            for kind in group
                            for m in by_kind[id(kind)]
                            if kind.scope != "camera" or m.instance.target == camera
                        ]
                    )
                ]
                for producers, consumers in itertools.pairwise(path):
                    for p, c in itertools.product(producers, consumers):
                        for out, into in itertools.product(
                            ports_on(p.kind, stream, "out"),
                            ports_on(c.kind, stream, "in"),
                        ):
                            key = (p.name, out.name, c.name, into.name)
                            links.setdefault(key, _link(stream, p, out, c, into))
        return cls(list(links.values()), tuple(cameras), members)

    def _aliases(self, link: Link) -> list[str]:
        """The routed names of the producer's port that reach this consumer: its
        camera or name, or, for a consumer serving every camera, each camera the
        producer's messages may belong to."""
        consumer, producer = link.consumer, link.producer
        if consumer.kind.scope != "single":
            targets = [consumer.instance.target]
        elif producer.kind.scope == "camera":
            targets = [producer.instance.target]
        else:
            targets = list(self.cameras)
        return [route(link.out.name, t) for t in targets]

    @cached_property
    def _sockets(self) -> dict[str, list[WiredPort]]:
        """Every process's sockets, from one pass over the links: each bound
        endpoint once, each connection once per peer, and the inputs nobody
        feeds, which still listen."""
        wired: dict[str, dict[tuple[str, str, bool], WiredPort]] = defaultdict(dict)

        def add(
            process: str, port: Port, endpoint: str, bind: bool, aliases: list[str]
        ) -> None:
            key = (port.name, endpoint, bind)
            known = wired[process].get(key)
            merged = tuple(dict.fromkeys((*(known.aliases if known else ()), *aliases)))
            wired[process][key] = WiredPort(port, endpoint, bind, merged)

        for link in self.links:
            producer_binds = link.out.bound
            binder, bound_port = (
                (link.producer, link.out)
                if producer_binds
                else (link.consumer, link.into)
            )
            endpoint = f"{binder.name}.{bound_port.endpoint}"
            add(
                link.producer.name,
                link.out,
                endpoint,
                producer_binds,
                self._aliases(link),
            )
            add(link.consumer.name, link.into, endpoint, not producer_binds, [])
        for member in self.processes:
            for port in member.kind.ports:
                if port.direction == "in" and port.bound:
                    add(member.name, port, f"{member.name}.{port.endpoint}", True, [])
        return {process: list(ports.values()) for process, ports in wired.items()}

    def sockets(self, process: str) -> list[WiredPort]:
        """The sockets of one process (a member's, for a camera group)."""
        return self._sockets.get(process, [])

    def bound_endpoints(self) -> set[str]:
        """The name of every endpoint some process binds."""
        return {w.endpoint for ports in self._sockets.values() for w in ports if w.bind}

    def targets(self, process: str, port: str) -> list[str]:
        """The consumers one ``out`` port of a process reaches, by their target
        (a sink's name, a camera), in link order."""
        return list(
            dict.fromkeys(
                link.consumer.instance.target or link.consumer.name
                for link in self.links
                if link.producer.name == process and link.out.name == port
            )
        )

    def connected(self, process: str, port: str) -> bool:
        """Whether a port of a process has a peer (an ``out`` with no consumer
        must not be sent on)."""
        return any(
            (link.producer.name == process and link.out.name == port)
            or (link.consumer.name == process and link.into.name == port)
            for link in self.links
        )

    def downstream(self, kind_name: str) -> set[str]:
        """The kinds the chain reaches from ``kind_name``'s outputs (downstream
        streams only), by name."""
        edges: dict[str, set[str]] = defaultdict(set)
        for link in self.links:
            if not link.out.upstream:
                edges[link.producer.kind.name].add(link.consumer.kind.name)
        seen: set[str] = set()
        todo = [kind_name]
        while todo:
            for nxt in edges[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen


def pixel_needs(kinds: Iterable[StageKind], loaded: Any, camera: str) -> list[Any]:
    """What each kind that reads a camera's pixels needs of them (``FULL_FRAMES``
    or a size), from the kinds' own declarations."""
    config = loaded.config
    needs = []
    for kind in kinds:
        if kind.pixels is None:
            continue
        serves = kind.scope != "camera" or any(
            i.target == camera for i in kind.instances(config)
        )
        if serves:
            need = kind.pixels(loaded, camera)
            if need is not None:
                needs.append(need)
    return needs


def scaled_size(kinds: Iterable[StageKind], loaded: Any, camera: str) -> Any:
    """The one size every reader of a camera's pixels needs, when they agree on a
    size that is not the full frame: decode may then scale to it. None otherwise."""
    needs = pixel_needs(kinds, loaded, camera)
    if not needs or FULL_FRAMES in needs or any(n != needs[0] for n in needs):
        return None
    return needs[0]
