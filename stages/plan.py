"""Turns a config into the chain of stage processes and the links between them.

Endpoints are named; by default each is an ``ipc://`` socket in the run's private
runtime folder, and ``links.endpoints`` can move any of them to ``tcp://`` (pixels then
travel inline instead of through shared memory)::

    capture.<cam>.out  -> decode.<cam>  -> detect.in -> track.<cam>.in -> sink.<name>.in
                          decode.<cam>.acks <- track.<cam> (acknowledgements)
                                                track.<cam> -> annotate.<cam>.in (lossy)
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import zmq

from pipeline.config import LoadedConfig
from pipeline.errors import ConfigError
from pipeline.runtime import StagePlan
from pipeline.transport import CurveKeys, Endpoint, LinkOptions
from stages.annotate import AnnotateStage
from stages.capture import CaptureStage, FileSourceConfig
from stages.decode import DecodeStage
from stages.detect import DetectStage
from stages.live import LiveCaptureStage
from stages.sink_jsonl import JsonlSink, JsonlSinkConfig
from stages.sink_mqtt import MqttSink, MqttSinkConfig
from stages.sink_sqlite import SqliteSink, SqliteSinkConfig
from stages.sink_webhook import WebhookSink, WebhookSinkConfig
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
        + [f"annotate.{c}" for c, cam in loaded.config.cameras.items() if cam.annotate]
        + [f"sink.{s.name}" for s in loaded.config.sinks]
    )


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
    cfg = loaded.config
    links = cfg.links
    frames = LinkOptions(hwm=links.frame_hwm, linger_ms=0)
    packets = LinkOptions(hwm=links.frame_hwm * 4, linger_ms=0)
    events = LinkOptions(hwm=links.event_hwm, linger_ms=links.event_linger_ms)

    def uri(endpoint: str) -> str:
        return endpoint_uri(loaded, runtime_dir, endpoint)

    def link(
        port: str, socket_type: int, endpoint: str, bind: bool, options: LinkOptions
    ) -> Endpoint:
        address = uri(endpoint)
        keys = (
            curve_keys(loaded, endpoint, bind) if address.startswith("tcp://") else None
        )
        return Endpoint(port, socket_type, address, bind, options, keys)

    kind, _, target = name.partition(".")
    streams = list(cfg.cameras)
    if kind == "capture" and target in cfg.cameras:
        camera = cfg.cameras[target]
        file = isinstance(camera.source, FileSourceConfig)
        endpoint = link("packets", zmq.PUSH, f"capture.{target}.out", True, packets)
        if file and camera.source.live:  # type: ignore[union-attr]
            return StagePlan(
                name,
                kind,
                (endpoint,),
                lambda: CaptureStage(target, camera.source),  # type: ignore[arg-type]
                lossy_ports=frozenset({"packets"}),
            )
        if not file:
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
                link("packets", zmq.PULL, f"capture.{target}.out", False, packets),
                link("acks", zmq.PULL, f"decode.{target}.acks", True, events),
                link("frames", zmq.PUSH, "detect.in", False, frames),
            ),
            lambda: DecodeStage(target, camera.decode, prefix),
        )
    if name == "detect":
        endpoints = [link("frames", zmq.PULL, "detect.in", True, frames)]
        endpoints += [
            link(f"track.{c}", zmq.PUSH, f"track.{c}.in", False, frames)
            for c in streams
        ]
        cameras = {c: cam.detect for c, cam in cfg.cameras.items()}
        # track draws and snapshots from the pixels: inline when not in shared memory
        pixels = {c for c, cam in cfg.cameras.items() if cam.annotate or cam.snapshots}
        return StagePlan(
            name,
            kind,
            tuple(endpoints),
            lambda: DetectStage(
                cfg.detector,
                loaded.model_path,
                cameras,
                pixels,
                classifier_path=loaded.classifier_path,
            ),
        )
    if kind == "track" and target in cfg.cameras:
        camera = cfg.cameras[target]
        endpoints = [
            link("detections", zmq.PULL, f"track.{target}.in", True, frames),
            link("acks", zmq.PUSH, f"decode.{target}.acks", False, events),
        ]
        endpoints += [
            link("events", zmq.PUSH, f"sink.{s.name}.in", False, events)
            for s in cfg.sinks
        ]
        if camera.annotate:
            endpoints.append(
                link(
                    "annotate",
                    zmq.PUSH,
                    f"annotate.{target}.in",
                    False,
                    LinkOptions(hwm=2, linger_ms=0),
                )
            )
        return StagePlan(
            name,
            kind,
            tuple(endpoints),
            lambda: TrackStage(
                target,
                cfg.tracker,
                camera.rules,
                lambda: _reload_rules(loaded.path, target),
                snapshots=camera.snapshots,
                aggregate_s=camera.aggregate_s,
                annotate=camera.annotate is not None,
                privacy=camera.privacy,
            ),
            lossy_ports=frozenset({"annotate"}),
        )
    if kind == "annotate" and target in cfg.cameras and cfg.cameras[target].annotate:
        annotate = cfg.cameras[target].annotate
        assert annotate is not None
        endpoint = link(
            "frames",
            zmq.PULL,
            f"annotate.{target}.in",
            True,
            LinkOptions(hwm=2, linger_ms=0),
        )
        return StagePlan(
            name, kind, (endpoint,), lambda: AnnotateStage(target, annotate)
        )
    sinks = {s.name: s for s in cfg.sinks}
    if kind == "sink" and target in sinks:
        sink = sinks[target]
        endpoint = link("events", zmq.PULL, f"sink.{target}.in", True, events)
        return StagePlan(
            name,
            kind,
            (endpoint,),
            lambda: make_sink(loaded, sink, streams),
            exit_when_finished=True,
        )
    raise KeyError(
        f"no stage named {name!r}; this config has {', '.join(stage_names(loaded))}"
    )


def make_sink(loaded: LoadedConfig, sink: Any, streams: list[str]) -> Any:
    """The sink stage for one ``sinks`` entry."""
    if isinstance(sink, SqliteSinkConfig):
        return SqliteSink(sink, streams)
    if isinstance(sink, JsonlSinkConfig):
        return JsonlSink(sink, streams)
    if isinstance(sink, WebhookSinkConfig):
        return WebhookSink(sink, streams)
    assert isinstance(sink, MqttSinkConfig)
    rules = {
        camera: [(rule.name, rule.kind) for rule in cam.rules]
        for camera, cam in loaded.config.cameras.items()
    }
    return MqttSink(sink, streams, rules)


def ring_prefix(runtime_dir: Path) -> str:
    """Name prefix of this run's shared-memory rings (unique per runtime folder)."""
    return "fc-" + hashlib.sha256(str(runtime_dir).encode()).hexdigest()[:10]


def _reload_rules(path: Path, camera: str) -> list[Any]:
    """The rules of one camera, read again from the config file (SIGHUP).

    Raises:
        ConfigError: the edited file is invalid (the caller keeps its rules).
    """
    from pipeline.config import load_config

    cameras = load_config(path).config.cameras
    if camera not in cameras:
        raise ConfigError(
            f"camera {camera!r} is no longer in {path}; restart to remove it"
        )
    return list(cameras[camera].rules)


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
