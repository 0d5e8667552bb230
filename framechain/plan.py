"""Turns a config into the chain of stage processes and the links between them.

The links come from the ports each kind declares (``pipeline.topology``). Endpoints
are named after the process that binds them; by default each is an ``ipc://``
socket in the run's private runtime folder, and ``links.endpoints`` can move any of
them to ``tcp://`` (pixels then travel inline instead of through shared memory).
With the built-in kinds::

    capture.<cam>.out  -> decode.<cam>  -> detect.in -> track.<cam>.in -> sink.<name>.in
                          decode.<cam>.acks <- track.<cam> (acknowledgements)
                          track.<cam>.stored <- sink.<name> (stored, acknowledgements)
                                                track.<cam> -> annotate.<cam>.in (lossy)
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import zmq

from pipeline.config import LoadedConfig
from pipeline.errors import ConfigError
from pipeline.group import group_plan
from pipeline.processes import StageRoles
from pipeline.registry import PlanContext, Process
from pipeline.stageplan import StagePlan
from pipeline.topology import Wiring
from pipeline.transport import CurveKeys, Endpoint, LinkOptions


def endpoint_uri(loaded: LoadedConfig, runtime_dir: Path, name: str) -> str:
    return loaded.config.links.endpoints.get(name, f"ipc://{runtime_dir}/{name}")


def stage_names(loaded: LoadedConfig) -> list[str]:
    """All stage process names, upstream first."""
    return [p.name for p in loaded.registry.processes(loaded.config)]


def build_plan(loaded: LoadedConfig, name: str, runtime_dir: Path) -> StagePlan:
    """The plan of one stage process, by its name (see ``stage_names``), with the
    recordings ``links.record`` asks of its inputs.

    Raises:
        KeyError: no stage of that name in this config.
    """
    plan = _build_plan(loaded, name, runtime_dir)
    record = {
        e.port: Path(loaded.config.links.record[endpoint])
        for endpoint in loaded.config.links.record
        for e in plan.endpoints
        if e.socket_type == zmq.PULL
        and e.uri == endpoint_uri(loaded, runtime_dir, endpoint)
    }
    return replace(plan, record=record) if record else plan


def _build_plan(loaded: LoadedConfig, name: str, runtime_dir: Path) -> StagePlan:
    links = loaded.config.links

    def uri(endpoint: str) -> str:
        return endpoint_uri(loaded, runtime_dir, endpoint)

    context = PlanContext(
        loaded,
        runtime_dir,
        loaded.registry.wiring(loaded.config),
        uri,
        {
            "frames": LinkOptions(hwm=links.frame_hwm, linger_ms=0),
            "packets": LinkOptions(hwm=links.frame_hwm * 4, linger_ms=0),
            "events": LinkOptions(hwm=links.event_hwm, linger_ms=links.event_linger_ms),
        },
    )
    process = loaded.registry.process(loaded.config, name)
    if process.members:
        plans = {m.name: _wired(context, m) for m in process.members}
        return group_plan(name, plans)
    return _wired(context, process)


def _wired(context: PlanContext, process: Process) -> StagePlan:
    """A process's plan from its kind, with the sockets its ports are wired to."""
    loaded = context.loaded
    plan = process.kind.plan(context, process.instance)
    endpoints = []
    lossy = set(plan.lossy_ports)
    best_effort = set(plan.best_effort_ports)
    for wired in context.wiring.sockets(process.name):
        port = wired.port
        address = context.uri(wired.endpoint)
        keys = (
            curve_keys(loaded, wired.endpoint, wired.bind)
            if address.startswith("tcp://")
            else None
        )
        options = port.options or context.links[port.link]
        socket_type = zmq.PULL if port.direction == "in" else zmq.PUSH
        endpoints.append(
            Endpoint(
                port.name,
                socket_type,
                address,
                wired.bind,
                options,
                keys,
                wired.aliases,
            )
        )
        if port.lossy:
            lossy.add(port.name)
        if port.best_effort:
            best_effort.add(port.name)
    return replace(
        plan,
        endpoints=plan.endpoints + tuple(endpoints),
        lossy_ports=frozenset(lossy),
        best_effort_ports=frozenset(best_effort),
        drains=plan.drains and process.kind.role != "service",
    )


def stage_roles(loaded: LoadedConfig) -> StageRoles:
    """What the supervisor needs to know of this config's stages, from their kinds."""
    processes = loaded.registry.processes(loaded.config)
    order = {id(kind): i for i, kind in enumerate(loaded.registry.kinds())}
    heads = sorted(
        (p for p in processes if p.kind.ends_streams), key=lambda p: -order[id(p.kind)]
    )
    wiring = loaded.registry.wiring(loaded.config)
    companions = {
        p.name: feeders(wiring, processes, p)
        for p in processes
        if p.kind.restarts_feeders
    }
    return StageRoles(
        terminal=frozenset(p.name for p in processes if p.kind.role == "terminal"),
        services=frozenset(p.name for p in processes if p.kind.role == "service"),
        ends_streams=tuple(p.name for p in heads),
        reloads=frozenset(p.name for p in processes if p.kind.reloads),
        restart_with=companions,
        members={
            p.name: tuple(m.name for m in p.members) for p in processes if p.members
        },
    )


def feeders(
    wiring: Wiring, processes: list[Process], process: Process
) -> tuple[str, ...]:
    """The processes that feed ``process``'s ``restarts_feeders`` ports (for a
    group, its members' feeders' processes): restarted with it."""
    members = {m.name for m in process.each()}
    fed = {
        link.producer.name
        for link in wiring.links
        if link.consumer.name in members
        and link.into.name in process.kind.restarts_feeders
    }
    return tuple(p.name for p in processes if any(m.name in fed for m in p.each()))


def curve_keys(loaded: LoadedConfig, endpoint: str, bind: bool) -> CurveKeys | None:
    """This host's CURVE keys for a tcp:// endpoint, or None when links are plain.

    Raises:
        ConfigError: a key file is missing or unreadable, or a client end has no
            server key for the endpoint.
    """
    import zmq.auth

    curve = loaded.config.links.curve
    if curve is None:
        return None
    try:
        public, secret = zmq.auth.load_certificate(curve.secret_key_file)
        server_public = None
        if not bind:
            if endpoint not in curve.server_keys:
                raise ConfigError(
                    f"links.curve.server_keys: no public key for endpoint "
                    f"{endpoint!r}; add the certificate of the host that binds it"
                )
            server_public, _ = zmq.auth.load_certificate(curve.server_keys[endpoint])
    except (OSError, ValueError) as e:
        raise ConfigError(f"links.curve: cannot read a certificate: {e}") from e
    if secret is None:
        raise ConfigError(
            f"links.curve.secret_key_file {curve.secret_key_file} holds no "
            "secret key; give the NAME.key_secret file"
        )
    return CurveKeys(
        public, secret, server_public, curve.allowed_clients_dir if bind else None
    )
