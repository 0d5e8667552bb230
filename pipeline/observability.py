"""What an operator scrapes: Prometheus metrics built from the stages' heartbeat
statistics, and the health endpoints (R9, R26).

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
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import accumulate
from typing import Any

log = logging.getLogger(__name__)

Snapshot = Callable[[], dict[str, Any]]
"""Returns {"status": str, "stages": {name: {"state", "restarts", "stats"}}}."""


def _camera(stage: str) -> str:
    return stage.partition(".")[2]


def collect(snapshot: dict[str, Any]) -> Iterator[Any]:
    """Metric families for one snapshot of the chain."""
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    stages: dict[str, dict[str, Any]] = snapshot["stages"]
    up = GaugeMetricFamily(
        "framechain_stage_up", "1 while the stage runs and heartbeats", labels=["stage"]
    )
    restarts = CounterMetricFamily(
        "framechain_stage_restarts",
        "Restarts of the stage by the supervisor",
        labels=["stage"],
    )
    cpu = CounterMetricFamily(
        "framechain_stage_cpu_seconds",
        "CPU time of the stage process",
        labels=["stage"],
    )
    frames = CounterMetricFamily(
        "framechain_frames",
        "Frames out of decode / through detect and track",
        labels=["stage", "camera"],
    )
    dropped = CounterMetricFamily(
        "framechain_frames_dropped",
        "Frames dropped, by reason",
        labels=["camera", "reason"],
    )
    errors = CounterMetricFamily(
        "framechain_decode_errors", "Packets that failed to decode", labels=["camera"]
    )
    reconnects = CounterMetricFamily(
        "framechain_reconnects", "Reconnections of a live source", labels=["camera"]
    )
    online = GaugeMetricFamily(
        "framechain_camera_online", "1 while the camera delivers", labels=["camera"]
    )
    depth = GaugeMetricFamily(
        "framechain_queue_depth",
        "Frames in flight behind decode",
        labels=["camera", "stage"],
    )
    age = GaugeMetricFamily(
        "framechain_frame_age_seconds",
        "Now minus capture time, over recent frames",
        labels=["camera", "stage", "quantile"],
    )
    fps = GaugeMetricFamily(
        "framechain_fps", "Frames per second tracked", labels=["camera"]
    )
    events = CounterMetricFamily(
        "framechain_events", "Events received by a sink", labels=["sink"]
    )
    backlog = GaugeMetricFamily(
        "framechain_sink_backlog",
        "Events produced but not yet delivered by the sink (in flight or spooled)",
        labels=["sink"],
    )
    histograms = {
        "inference": HistogramMetricFamily(
            "framechain_inference_seconds", "Inference time per batch", labels=["stage"]
        ),
        "latency": HistogramMetricFamily(
            "framechain_end_to_end_seconds",
            "Capture to tracked-and-evaluated time",
            labels=["camera"],
        ),
    }
    produced = sum(
        int(s["stats"].get("events_emitted", 0))
        for n, s in stages.items()
        if n.startswith("track.")
    )
    for name, stage in stages.items():
        stats: dict[str, Any] = stage["stats"]
        kind, camera = name.partition(".")[0], _camera(name)
        up.add_metric([name], 1.0 if stage["state"] == "running" else 0.0)
        restarts.add_metric([name], stage["restarts"])
        cpu.add_metric([name], float(stats.get("cpu_s", 0.0)))
        if kind in ("decode", "track"):
            frames.add_metric([kind, camera], int(stats.get("frames", 0)))
        if kind == "decode":
            dropped.add_metric(
                [camera, "behind"], stats.get("frames_dropped_behind", 0)
            )
            dropped.add_metric(
                [camera, "packets_lost"], stats.get("frames_dropped_gap", 0)
            )
            errors.add_metric([camera], stats.get("decode_errors", 0))
            depth.add_metric([camera, "decode"], stats.get("in_flight", 0))
            _ages(age, stats, camera, "decode", "frame_age_out")
        elif kind == "capture":
            reconnects.add_metric([camera], stats.get("reconnects", 0))
            dropped.add_metric(
                [camera, "capture_queue"],
                stats.get("dropped.packets", 0) + stats.get("queue_overflows", 0),
            )
            online.add_metric([camera], 0.0 if stats.get("state") == "offline" else 1.0)
        elif kind == "track":
            fps.add_metric([camera], float(stats.get("fps", 0.0)))
            _ages(age, stats, camera, "track", "frame_age")
            dropped.add_metric([camera, "annotate"], stats.get("dropped.annotate", 0))
            _histogram(histograms["latency"], [camera], stats.get("latency"))
        elif kind == "detect":
            dropped.add_metric(
                ["all", "slot_overwritten"], stats.get("frames_missed", 0)
            )
            _histogram(histograms["inference"], [name], stats.get("inference"))
        elif kind == "sink":
            received = int(stats.get("events_received", 0))
            events.add_metric([camera], received)
            spooled = int(stats.get("spooled", 0))
            backlog.add_metric([camera], max(0, produced - received) + spooled)
    yield from (
        up,
        restarts,
        cpu,
        frames,
        dropped,
        errors,
        reconnects,
        online,
        depth,
        age,
        fps,
        events,
        backlog,
        *histograms.values(),
    )


def _ages(
    family: Any, stats: dict[str, Any], camera: str, stage: str, key: str
) -> None:
    for quantile, suffix in (("0.5", "p50"), ("0.99", "p99")):
        value = stats.get(f"{key}_{suffix}_s")
        if value is not None:
            family.add_metric([camera, stage, quantile], float(value))


def _histogram(family: Any, labels: list[str], data: dict[str, Any] | None) -> None:
    if not data:
        return
    bounds = [str(b) for b in data["buckets"]] + ["+Inf"]
    cumulative = list(accumulate(data["counts"]))
    family.add_metric(labels, list(zip(bounds, cumulative, strict=True)), data["sum"])


class _Collector:
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        return collect(self.snapshot())


def readiness(snapshot: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) for /readyz."""
    stages = {name: s["state"] for name, s in snapshot["stages"].items()}
    cameras = {
        _camera(name): s["stats"].get(
            "state", "online" if s["state"] == "running" else s["state"]
        )
        for name, s in snapshot["stages"].items()
        if name.startswith("capture.")
    }
    ready = snapshot["status"] == "running" and all(
        v == "running" for v in stages.values()
    )
    body = {
        "status": snapshot["status"]
        if ready or snapshot["status"] != "running"
        else "degraded",
        "stages": stages,
        "cameras": cameras,
    }
    return (200 if ready else 503), body


class HealthServer:
    """Serves /metrics, /healthz and /readyz from a thread of the supervisor."""

    def __init__(self, listen: str, snapshot: Snapshot) -> None:
        from prometheus_client import CollectorRegistry, generate_latest

        host, _, port = listen.rpartition(":")
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(snapshot))

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._reply(
                        200,
                        generate_latest(registry),
                        "text/plain; version=0.0.4; charset=utf-8",
                    )
                elif self.path == "/healthz":
                    self._reply(200, b'{"status": "alive"}\n', "application/json")
                elif self.path == "/readyz":
                    status, body = readiness(snapshot())
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
