"""What an operator scrapes: Prometheus metrics built from the stages' heartbeat
statistics, and the health endpoints.

``/metrics``  Prometheus text, one family per measurement, labelled by stage/camera.
``/healthz``  200 while the supervisor lives.
``/readyz``   200 only while every stage is running and heartbeating; 503 while
              starting or stopping. The JSON body lists each stage's and camera's
              state.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import accumulate
from typing import Any

from pipeline.metrics import HistogramReport
from pipeline.registry import Sample, StageKind, read_stats
from pipeline.stageplan import RuntimeStats

log = logging.getLogger(__name__)

Snapshot = Callable[[], dict[str, Any]]
"""Returns {"status": str, "stages": {name: {"state", "restarts", "stats"}}}."""


Kinds = Mapping[str, StageKind]
"""The stage kind of each process, by process name."""

_FAMILIES = {
    "counter": "CounterMetricFamily",
    "gauge": "GaugeMetricFamily",
    "histogram": "HistogramMetricFamily",
}


def _chain_totals(stages: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for stage in stages.values():
        for key, value in stage["stats"].items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                totals[key] += value
    return totals


def _samples(snapshot: Mapping[str, Any], kinds: Kinds) -> Iterator[Sample]:
    stages: Mapping[str, Mapping[str, Any]] = snapshot["stages"]
    chain = _chain_totals(stages)
    for name, stage in stages.items():
        stats = stage["stats"]
        labels = {"stage": name}
        up = 1.0 if stage["state"] == "running" else 0.0
        yield Sample(
            "stage_up", "gauge", "1 while the stage runs and heartbeats", labels, up
        )
        yield Sample(
            "stage_restarts",
            "counter",
            "Restarts of the stage by the supervisor",
            labels,
            stage["restarts"],
        )
        yield Sample(
            "stage_cpu_seconds",
            "counter",
            "CPU time of the stage process",
            labels,
            read_stats(stats, RuntimeStats).cpu_s,
        )
        kind = kinds.get(name)
        if kind is not None and kind.metrics is not None:
            yield from kind.metrics(name, stats, chain)


def collect(snapshot: Mapping[str, Any], kinds: Kinds) -> Iterator[Any]:
    """Metric families for one snapshot of the chain: per stage its liveness,
    restarts and CPU, then what each stage's kind reports of its statistics."""
    from prometheus_client import core

    families: dict[str, Any] = {}
    for sample in _samples(snapshot, kinds):
        family = families.get(sample.name)
        if family is None:
            make = getattr(core, _FAMILIES[sample.kind])
            family = families[sample.name] = make(
                f"framechain_{sample.name}", sample.help, labels=list(sample.labels)
            )
        values = list(sample.labels.values())
        if sample.kind == "histogram":
            _histogram(family, values, sample.value)
        else:
            family.add_metric(values, sample.value)
    yield from families.values()


def _histogram(family: Any, labels: list[str], data: HistogramReport) -> None:
    bounds = [str(b) for b in data.buckets] + ["+Inf"]
    cumulative = list(accumulate(data.counts))
    family.add_metric(labels, list(zip(bounds, cumulative, strict=True)), data.sum)


class _Collector:
    def __init__(self, snapshot: Snapshot, kinds: Kinds) -> None:
        self.snapshot = snapshot
        self.kinds = kinds

    def collect(self) -> Iterator[Any]:
        return collect(self.snapshot(), self.kinds)


METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def metrics_renderer(snapshot: Snapshot, kinds: Kinds) -> Callable[[], bytes]:
    """Prometheus text of the snapshot ``snapshot()`` gives at each call."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snapshot, kinds))
    return lambda: bytes(generate_latest(registry))


_WHY = {
    "unresponsive": "sends no heartbeat",
    "stalled": "makes no progress while input waits for it",
    "starting": "is starting",
    "restarting": "is being restarted",
    "failed": "has failed",
    "stopping": "is stopping",
}


def _chain_health(camera: str, stages: Mapping[str, str], cameras: set[str]) -> str:
    """``ok``, or why this camera's chain makes no progress: the first stage that
    serves it (its own stages and the shared ones) and is not running."""
    for name, state in stages.items():
        suffix = name.partition(".")[2]
        if state != "running" and (suffix == camera or suffix not in cameras):
            return f"{name} {_WHY.get(state, state)}"
    return "ok"


def readiness(snapshot: Mapping[str, Any], kinds: Kinds) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) for /readyz: each camera's state comes from its source
    stage (the kinds with a ``camera_state``), its chain's health from the states
    of the stages that serve it. A service that is down leaves every camera ready
    and the status degraded."""
    everything = {name: s["state"] for name, s in snapshot["stages"].items()}
    # a service beside the chain (an API, a recorder) never makes a camera unready
    stages = {
        name: state
        for name, state in everything.items()
        if (kind := kinds.get(name)) is None or kind.role != "service"
    }
    services = {n: s for n, s in everything.items() if n not in stages}
    sources = {}
    for name, stage in snapshot["stages"].items():
        kind = kinds.get(name)
        if kind is not None and kind.camera_state is not None:
            camera = name.partition(".")[2]
            sources[camera] = kind.camera_state(stage["stats"], stage["state"])
    cameras = {
        camera: {"state": state, "chain": _chain_health(camera, stages, set(sources))}
        for camera, state in sources.items()
    }
    offline = sorted(c for c, v in cameras.items() if v["state"] == "offline")
    running = snapshot["status"] == "running" and all(
        v == "running" for v in stages.values()
    )
    # An offline camera leaves the service ready (it is retrying, as it should,
    # and the others still count): listed, and the status says degraded. Only
    # when every camera is offline does nothing get done: 503.
    ready = running and not (cameras and len(offline) == len(cameras))
    # what a stage says is wrong though it runs (a full disk, a damaged file)
    problems = {
        name: str(s["stats"]["problem"])
        for name, s in snapshot["stages"].items()
        if s["stats"].get("problem")
    }
    degraded = snapshot["status"] == "running" and (
        not running
        or bool(offline)
        or bool(problems)
        or any(state != "running" for state in services.values())
    )
    body = {
        "status": "degraded" if degraded else snapshot["status"],
        "stages": everything,
        "cameras": cameras,
        "offline": offline,
        "problems": problems,
    }
    return (200 if ready else 503), body


class HealthServer:
    """Serves /metrics, /healthz and /readyz from a thread of the supervisor."""

    def __init__(self, listen: str, snapshot: Snapshot, kinds: Kinds) -> None:
        host, _, port = listen.rpartition(":")
        metrics = metrics_renderer(snapshot, kinds)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._reply(200, metrics(), METRICS_CONTENT_TYPE)
                elif self.path == "/healthz":
                    self._reply(200, b'{"status": "alive"}\n', "application/json")
                elif self.path == "/readyz":
                    status, body = readiness(snapshot(), kinds)
                    self._reply(
                        status, json.dumps(body).encode() + b"\n", "application/json"
                    )
                else:
                    self._reply(404, b"not found\n", "text/plain")

            def _reply(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        try:
            self.server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
        except OSError as e:
            from pipeline.errors import FramechainError

            raise FramechainError(
                f"cannot serve health and metrics on {listen}: "
                f"{e.strerror}; choose another http.listen"
            ) from e
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, daemon=True, name="health"
        )

    def start(self) -> None:
        self._thread.start()
        log.info("metrics and health on http://%s:%d", *self.server.server_address[:2])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
