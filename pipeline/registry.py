"""The registry of stage kinds: what the framework knows of its plugins.

Each stage kind declares itself, next to its code, with one ``register`` call: its
config (the parts of the YAML tree it owns), how many processes a config asks of it,
the plan of each process (ports, links, stage factory), its role in the chain and
how it reports. Everything in the framework that depends on the kinds (the config
unions, the plan, the supervisor's ordered stop, metrics, readiness, the summary) is
derived from these entries, so a new kind is one module and one registration.

The registry is a plain object passed around, never a module global: the application
builds one, fills it with the built-in kinds and any ``plugins`` a config names, and
hands it to the loader and the supervisor.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import msgspec

from pipeline.errors import ConfigError
from pipeline.eventkinds import EventKinds
from pipeline.topology import Port, Wiring, chain_order

if TYPE_CHECKING:
    from pathlib import Path

    from pipeline.config import LoadedConfig, ResolveContext
    from pipeline.stageplan import StagePlan
    from pipeline.transport import LinkOptions

Role = Literal["source", "transform", "terminal", "service"]
"""source: reads the outside world; transform: message in, message out;
terminal: the end of the chain, exits by itself once every stream has ended;
service: stands beside the chain (an HTTP API, a recorder): started, watched,
restarted and stopped like any stage, but the chain never waits for it, its
failure never ends the run, and cameras stay ready without it."""

Scope = Literal["camera", "single", "named"]
"""camera: one process per camera (the instance's target is the camera);
single: one process for every camera; named: one per config entry (a sink)."""

Where = Literal["root", "camera"]


@dataclass(frozen=True, slots=True)
class Section:
    """A key of the config tree that a kind owns, at the top level (``root``) or in
    every camera (``camera``). ``annotation`` is its pydantic type; ``default`` (or
    ``default_factory``) makes it optional."""

    where: Where
    key: str
    annotation: Any
    description: str
    default: Any = ...
    default_factory: Callable[[], Any] | None = None
    min_length: int | None = None


@dataclass(frozen=True, slots=True)
class Slot:
    """A union in the config tree that kinds add variants to, such as a camera's
    ``source`` or the list of ``sinks``: the kind that declares it owns the key;
    each variant is a config model with a ``kind`` literal."""

    name: str
    where: Where
    key: str
    description: str
    many: bool = False
    min_length: int | None = None
    default_empty: bool = False


@dataclass(frozen=True, slots=True)
class Sample:
    """One value for the metrics endpoint: family ``name`` (without the
    ``framechain_`` prefix), its type and help text, its labels and value. A
    histogram's value is a ``metrics.HistogramReport``."""

    name: str
    kind: Literal["counter", "gauge", "histogram"]
    help: str
    labels: Mapping[str, str]
    value: Any


@dataclass(frozen=True, slots=True)
class Instance:
    """One process a kind runs for a config: ``target`` is the camera, sink or
    other thing it serves (``capture.<target>``), empty for a single process."""

    target: str
    config: Any = None


def each_camera(
    having: Callable[[Any], bool] | None = None,
) -> Callable[[Any], list[Instance]]:
    """``instances`` for a per-camera kind: a process for every camera, or for
    each camera whose config has what ``having`` asks (a source type, an
    ``annotate`` section)."""

    def instances(config: Any) -> list[Instance]:
        return [
            Instance(name, camera)
            for name, camera in config.cameras.items()
            if having is None or having(camera)
        ]

    return instances


PlanBuilder = Callable[["PlanContext", Instance], "StagePlan"]
StatsView = Mapping[str, Any]
"""A stage's last heartbeat statistics, as they arrived (plain data)."""

StatsT = TypeVar("StatsT", bound=msgspec.Struct)


def read_stats(view: StatsView, stats_type: type[StatsT]) -> StatsT:
    """A kind's typed statistics from a heartbeat's plain data (keys the struct
    does not know, such as the runtime's, are left out; missing ones default)."""
    return msgspec.convert(view, stats_type, strict=False)


@dataclass(frozen=True, slots=True)
class StageKind:
    """A stage kind as the framework sees it.

    Attributes:
        name: the process name prefix (``capture`` -> ``capture.cam1``).
        role: see ``Role``.
        scope: see ``Scope``.
        instances: the processes a loaded config asks of this kind.
        plan: builds one process's plan (called in the supervisor and in the
            stage); its sockets come from ``ports`` (``pipeline.topology``).
        ports: the streams its processes consume and produce; the chain's
            wiring and order are derived from every kind's ports.
        pixels: what it needs of a camera's decoded pixels
            (``topology.FULL_FRAMES``, a size, or None: it reads none); decode
            scales frames only when every reader agrees on a smaller size.
        sections / variant: the config this kind owns: keys of the tree, or
            (``variant``: slot name, config model) one member of a union
            (``Registry.add_slot``).
        ends_streams: SIGUSR1 at an orderly stop ends its streams (stream heads);
            kinds further down the chain get it first.
        reloads: SIGHUP reloads what can change without a restart.
        restarts_feeders: its ``in`` ports whose producing processes restart
            whenever one of this kind does (a decode that starts over needs its
            capture to read the stream from the start again).
        groupable: one process may serve several cameras' instances
            (``supervisor.cameras_per_process``, ``pipeline/group.py``).
        progress: for the progress bar, whether this kind counts frames ``done``
            or the ``total`` to do (-1: unknown), and how to read it.
        resolve: checks that need more than the YAML (model files), in the
            chain's order; its return value is kept in ``LoadedConfig.resolved[name]``.
        metrics / summary / camera_state: how its heartbeat stats are reported;
            ``metrics(name, stats, chain)`` also sees ``chain``, each numeric stat
            summed over every stage (events produced, for a sink's backlog).
    """

    name: str
    role: Role
    scope: Scope
    instances: Callable[[Any], list[Instance]]
    plan: PlanBuilder
    ports: tuple[Port, ...] = ()
    pixels: Callable[[LoadedConfig, str], Any] | None = None
    sections: tuple[Section, ...] = ()
    variant: tuple[str, type] | None = None
    ends_streams: bool = False
    reloads: bool = False
    restarts_feeders: tuple[str, ...] = ()
    groupable: bool = False
    progress: tuple[Literal["done", "total"], Callable[[StatsView], int]] | None = None
    resolve: Callable[[ResolveContext], Any] | None = None
    metrics: Callable[[str, StatsView, StatsView], Iterable[Sample]] | None = None
    summary: Callable[[LoadedConfig, str, StatsView], list[str]] | None = None
    camera_state: Callable[[StatsView, str], str] | None = None


@dataclass(frozen=True, slots=True)
class PlanContext:
    """What a plan builder may use: the loaded config, the run's runtime folder,
    the config's wiring (whom a port reaches) and where an endpoint is."""

    loaded: LoadedConfig
    runtime_dir: Path
    wiring: Wiring
    uri: Callable[[str], str]
    links: Mapping[str, LinkOptions] = field(default_factory=dict)
    """Link options by use: ``frames``, ``packets``, ``events``."""

    def local(self, process: str, port: str) -> bool:
        """Whether every link of a process's port stays on this host (ipc://):
        frames may then travel through shared memory."""
        return all(
            self.uri(w.endpoint).startswith("ipc://")
            for w in self.wiring.sockets(process)
            if w.port.name == port
        )


# between a group's first and last camera: never in a camera name (so a group's
# name cannot be a camera's), and allowed in a systemd unit's
GROUP_MARK = ".."


@dataclass(frozen=True, slots=True)
class Process:
    """One stage process of a config: its kind and instance, or, for a camera
    group, its members (each a process of its own otherwise)."""

    kind: StageKind
    instance: Instance
    members: tuple[Process, ...] = ()

    @property
    def name(self) -> str:
        if self.instance.target:
            return f"{self.kind.name}.{self.instance.target}"
        return self.kind.name

    def each(self) -> tuple[Process, ...]:
        """Its members, or itself when it is not a group."""
        return self.members or (self,)


class Registry:
    """Stage kinds by name, the variants of each config slot, and the event kinds
    they produce.

    Several kinds may share a process name prefix when they are variants of one
    slot (every sink kind runs as ``sink.<name>``)."""

    def __init__(self) -> None:
        self._kinds: dict[str, StageKind] = {}
        self._slots: dict[str, Slot] = {}
        self._variants: dict[str, dict[type, Any]] = {}
        self._plugins: set[str] = set()
        self.events = EventKinds()  # the event kinds the kinds produce

    def add_slot(self, slot: Slot) -> None:
        """Declare a union of the config tree that kinds add variants to."""
        self._slots.setdefault(slot.name, slot)

    def register(self, kind: StageKind) -> StageKind:
        key = kind.name if kind.variant is None else f"{kind.name}:{kind.variant[1]}"
        if key in self._kinds and self._kinds[key] != kind:
            raise ValueError(f"stage kind {key} is registered twice")
        self._kinds[key] = kind
        if kind.variant is not None:
            self.add_variant(kind.variant[0], kind.variant[1], kind)
        return kind

    def add_variant(self, slot: str, model: type, implementation: Any) -> None:
        """Add a member to a config union (a stage kind's, or a rule kind's config
        model with the class that implements it)."""
        self._variants.setdefault(slot, {})[model] = implementation

    def implementations(self, slot: str) -> dict[type, Any]:
        """What implements each variant of a slot, by config model."""
        return dict(self._variants.get(slot, {}))

    def kinds(self) -> list[StageKind]:
        """Every kind in the chain's order, upstream first (``topology``)."""
        return chain_order(list(self._kinds.values()))

    def sections(self, where: Where) -> list[Section]:
        return [s for k in self.kinds() for s in k.sections if s.where == where]

    def slots(self, where: Where) -> list[Slot]:
        return [s for s in self._slots.values() if s.where == where]

    def variants(self, slot: str) -> list[type]:
        return list(self._variants.get(slot, {}))

    def processes(self, config: Any) -> list[Process]:
        """Every stage process of a validated config, upstream first. With N > 1
        cameras per process (``SupervisorConfig.group_size``) the instances of
        groupable kinds are grouped N cameras at a time, in the order of
        ``cameras``, the same cameras together for every kind (so a decode group
        restarts the capture group of the same cameras); a group is named after
        its first and last camera (``decode.cam0..cam7``)."""
        single = [
            Process(kind, instance)
            for kind in self.kinds()
            for instance in kind.instances(config)
        ]
        cameras = list(getattr(config, "cameras", {}))
        supervisor = getattr(config, "supervisor", None)
        per = supervisor.group_size(len(cameras)) if supervisor is not None else 1
        if per <= 1:
            return single
        order = {camera: i for i, camera in enumerate(cameras)}
        grouped: dict[tuple[str, int], list[Process]] = {}
        slots: list[Process | tuple[str, int]] = []
        for process in single:
            target = process.instance.target
            if not (process.kind.groupable and target in order):
                slots.append(process)
                continue
            key = (process.kind.name, order[target] // per)
            if key not in grouped:
                grouped[key] = []
                slots.append(key)
            grouped[key].append(process)
        result = []
        for slot in slots:
            if isinstance(slot, Process):
                result.append(slot)
                continue
            members = sorted(grouped[slot], key=lambda p: order[p.instance.target])
            chunk = cameras[slot[1] * per : (slot[1] + 1) * per]
            label = f"{chunk[0]}{GROUP_MARK}{chunk[-1]}"
            result.append(Process(members[0].kind, Instance(label), tuple(members)))
        return result

    def process(self, config: Any, name: str) -> Process:
        """Raises:
        KeyError: no stage of that name in this config (the message lists them)."""
        for process in self.processes(config):
            if process.name == name:
                return process
        names = ", ".join(p.name for p in self.processes(config))
        raise KeyError(f"no stage named {name!r}; this config has {names}")

    def process_kinds(self, config: Any) -> dict[str, StageKind]:
        """The kind of each stage, by name (metrics, readiness, summary): of every
        member of a camera group, as of a process of its own."""
        return {m.name: m.kind for p in self.processes(config) for m in p.each()}

    def wiring(self, config: Any) -> Wiring:
        """Every link of a validated config's processes."""
        return Wiring.of(
            self.kinds(), self.processes(config), list(getattr(config, "cameras", {}))
        )

    def endpoint_names(self, config: Any) -> set[str]:
        return self.wiring(config).bound_endpoints()

    def load_plugins(self, modules: Sequence[str]) -> None:
        """Import plugin modules; each calls ``register(registry)`` on this one.

        Raises:
            ConfigError: a module cannot be imported or has no ``register``.
        """
        for module_name in modules:
            if module_name in self._plugins:
                continue
            try:
                module = importlib.import_module(module_name)
            except ImportError as e:
                raise ConfigError(
                    f"plugins: cannot import {module_name!r} ({e}); install it or "
                    "put it on PYTHONPATH"
                ) from e
            except Exception as e:  # a plugin's own bug, reported as its own
                raise ConfigError(
                    f"plugins: importing {module_name!r} failed: "
                    f"{type(e).__name__}: {e}; fix the plugin or remove it"
                ) from e
            register = getattr(module, "register", None)
            if not callable(register):
                raise ConfigError(
                    f"plugins: {module_name!r} has no register(registry) function"
                )
            register(self)
            self._plugins.add(module_name)

    def __iter__(self) -> Iterator[StageKind]:
        return iter(self.kinds())
