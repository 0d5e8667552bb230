"""Turns a config into the chain of stage processes and the links between them.

Endpoints are named; by default each is an ``ipc://`` socket in the run's private
runtime folder, and ``links.endpoints`` can move any of them to ``tcp://`` (pixels then
travel inline instead of through shared memory)::

    capture.<cam>.out  -> decode.<cam>  -> detect.in -> track.<cam>.in -> sink.<name>.in
                          decode.<cam>.acks <- track.<cam> (acknowledgements)
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import zmq

from pipeline.config import LoadedConfig
from pipeline.runtime import StagePlan
from pipeline.transport import Endpoint, LinkOptions
from stages.capture import CaptureStage, FileSourceConfig
from stages.decode import DecodeStage
from stages.detect import DetectStage
from stages.live import LiveCaptureStage
from stages.sink_jsonl import JsonlSink, JsonlSinkConfig
from stages.sink_sqlite import SqliteSink
from stages.track import TrackStage


def endpoint_uri(loaded: LoadedConfig, runtime_dir: Path, name: str) -> str:
    return loaded.config.links.endpoints.get(name, f"ipc://{runtime_dir}/{name}")


def stage_names(loaded: LoadedConfig) -> list[str]:
    """All stage process names, upstream first."""
    cameras = list(loaded.config.cameras)
    return (
        [f"capture.{c}" for c in cameras]
        + [f"decode.{c}" for c in cameras]
        + ["detect"]
        + [f"track.{c}" for c in cameras]
        + [f"sink.{s.name}" for s in loaded.config.sinks]
    )


def build_plan(loaded: LoadedConfig, name: str, runtime_dir: Path) -> StagePlan:
    """The plan of one stage process, by its name (see ``stage_names``).

    Raises:
        KeyError: no stage of that name in this config.
    """
    cfg = loaded.config
    links = cfg.links
    frames = LinkOptions(hwm=links.frame_hwm, linger_ms=0)
    packets = LinkOptions(hwm=links.frame_hwm * 4, linger_ms=0)
    events = LinkOptions(hwm=links.event_hwm, linger_ms=links.event_linger_ms)

    def uri(endpoint: str) -> str:
        return endpoint_uri(loaded, runtime_dir, endpoint)

    kind, _, target = name.partition(".")
    streams = list(cfg.cameras)
    if kind == "capture" and target in cfg.cameras:
        camera = cfg.cameras[target]
        live = not isinstance(camera.source, FileSourceConfig)
        endpoint = Endpoint(
            "packets", zmq.PUSH, uri(f"capture.{target}.out"), True, packets
        )
        if live:
            # a live source never waits for the chain: full queues drop packets
            return StagePlan(
                name,
                kind,
                (endpoint,),
                lambda: LiveCaptureStage(target, camera.source),
                lossy_ports=frozenset({"packets"}),
            )
        return StagePlan(
            name, kind, (endpoint,), lambda: CaptureStage(target, camera.source)
        )
    if kind == "decode" and target in cfg.cameras:
        camera = cfg.cameras[target]
        out_uri = uri("detect.in")
        shm = camera.decode.shared_memory and out_uri.startswith("ipc://")
        prefix = ring_prefix(runtime_dir) if shm else None
        return StagePlan(
            name,
            kind,
            (
                Endpoint(
                    "packets", zmq.PULL, uri(f"capture.{target}.out"), False, packets
                ),
                Endpoint("acks", zmq.PULL, uri(f"decode.{target}.acks"), True, events),
                Endpoint("frames", zmq.PUSH, out_uri, False, frames),
            ),
            lambda: DecodeStage(target, camera.decode, prefix),
        )
    if name == "detect":
        endpoints = [Endpoint("frames", zmq.PULL, uri("detect.in"), True, frames)]
        endpoints += [
            Endpoint(f"track.{c}", zmq.PUSH, uri(f"track.{c}.in"), False, frames)
            for c in streams
        ]
        cameras = {c: cam.detect for c, cam in cfg.cameras.items()}
        return StagePlan(
            name,
            kind,
            tuple(endpoints),
            lambda: DetectStage(cfg.detector, loaded.model_path, cameras),
        )
    if kind == "track" and target in cfg.cameras:
        camera = cfg.cameras[target]
        endpoints = [
            Endpoint("detections", zmq.PULL, uri(f"track.{target}.in"), True, frames),
            Endpoint("acks", zmq.PUSH, uri(f"decode.{target}.acks"), False, events),
        ]
        endpoints += [
            Endpoint("events", zmq.PUSH, uri(f"sink.{s.name}.in"), False, events)
            for s in cfg.sinks
        ]
        return StagePlan(
            name,
            kind,
            tuple(endpoints),
            lambda: TrackStage(target, cfg.tracker, camera.rules),
        )
    sinks = {s.name: s for s in cfg.sinks}
    if kind == "sink" and target in sinks:
        sink = sinks[target]
        endpoint = Endpoint("events", zmq.PULL, uri(f"sink.{target}.in"), True, events)
        sink_class = JsonlSink if isinstance(sink, JsonlSinkConfig) else SqliteSink
        return StagePlan(
            name,
            kind,
            (endpoint,),
            lambda: sink_class(sink, streams),  # type: ignore[arg-type]
            exit_when_finished=True,
        )
    raise KeyError(
        f"no stage named {name!r}; this config has {', '.join(stage_names(loaded))}"
    )


def ring_prefix(runtime_dir: Path) -> str:
    """Name prefix of this run's shared-memory rings (unique per runtime folder)."""
    return "fc-" + hashlib.sha256(str(runtime_dir).encode()).hexdigest()[:10]
