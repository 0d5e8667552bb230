"""The api kind: one service process beside the chain when ``http.api`` is on,
serving the HTTP API, health and metrics on ``http.listen``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.config import ResolveContext
from pipeline.errors import ConfigError
from pipeline.registry import (
    Instance,
    PlanContext,
    Registry,
    Sample,
    StageKind,
    StatsView,
    read_stats,
)
from pipeline.stageplan import StagePlan
from pipeline.topology import Port
from pipeline.transport import LinkOptions
from stages.api.stats import ApiStats
from stages.sinks.eventstore import store_config


def _instances(config: Any) -> list[Instance]:
    return [Instance("", config.http)] if config.http.api else []


def _resolve(context: ResolveContext) -> None:
    """Raises ConfigError: the API is on and no sqlite sink keeps events."""
    if context.config.http.api and store_config(context.config) is None:
        raise ConfigError(
            context.problem(
                ("http", "api"),
                "the API answers from a sqlite sink's store; add "
                "{kind: sqlite, path: events.db} to sinks",
            )
        )


def _plan(context: PlanContext, instance: Instance) -> StagePlan:
    loaded = context.loaded
    config = loaded.config
    http = config.http

    def settings() -> Any:
        from pipeline.demand import Demand
        from pipeline.observability import metrics_renderer
        from pipeline.statusfile import read_status
        from stages.api.app import ApiSettings
        from stages.api.cameras import CameraBoard
        from stages.api.live import LivePictures
        from stages.api.redact import redact
        from stages.record.kind import clip_cameras

        board = CameraBoard(
            lambda: read_status(context.runtime_dir),
            loaded.registry.process_kinds(config),
            {
                name: [(rule.name, rule.kind) for rule in camera.rules]
                for name, camera in config.cameras.items()
            },
        )
        kinds = loaded.registry.events.all()
        return ApiSettings(
            store=Path(store_config(config).path),
            board=board,
            process_kinds=loaded.registry.process_kinds(config),
            event_kinds=tuple(k.name for k in kinds),
            directional=tuple(k.name for k in kinds if k.directions),
            config=redact(config.model_dump(mode="json")),
            metrics=metrics_renderer(
                lambda: board.snapshot() or {"status": "stopped", "stages": {}},
                loaded.registry.process_kinds(config),
            ),
            live=LivePictures(Demand(context.runtime_dir, "preview"), http.preview),
            snapshot_dirs={
                name: (Path(camera.snapshots.directory) / name).resolve()
                for name, camera in config.cameras.items()
                if camera.snapshots is not None
            },
            clips=clip_cameras(config),
            config_path=loaded.path,
            registry=loaded.registry,
            token=http.token.get_secret_value() if http.token else None,
        )

    def build() -> Any:
        from stages.api.stage import ApiStage

        return ApiStage(http.listen, settings)

    return StagePlan("api", build)


def _metrics(name: str, stats: StatsView, _chain: StatsView) -> Iterable[Sample]:
    api = read_stats(stats, ApiStats)
    yield Sample("api_requests", "counter", "HTTP API requests", {}, api.requests)
    yield Sample(
        "api_unauthorized",
        "counter",
        "HTTP API requests refused for a missing or wrong token",
        {},
        api.unauthorized,
    )
    yield Sample(
        "api_server_errors", "counter", "HTTP API 5xx answers", {}, api.server_errors
    )
    yield Sample(
        "api_pictures_drawn",
        "counter",
        "Live pictures drawn for latest.jpg and stream.mjpeg viewers",
        {},
        api.pictures_drawn,
    )
    yield Sample(
        "api_live_streams", "gauge", "stream.mjpeg answers open", {}, api.live_streams
    )


def _summary(_loaded: Any, _target: str, stats: StatsView) -> list[str]:
    api = read_stats(stats, ApiStats)
    return [f"  api on {api.listening}: {api.requests} requests"]


KIND = StageKind(
    name="api",
    role="service",
    scope="single",
    instances=_instances,
    plan=_plan,
    ports=(
        # each camera's small previews, while someone watches its live picture
        Port(
            "preview",
            "preview",
            "in",
            endpoint="preview",
            options=LinkOptions(hwm=8, linger_ms=0),
        ),
    ),
    resolve=_resolve,
    metrics=_metrics,
    summary=_summary,
)


def register(registry: Registry) -> None:
    registry.register(KIND)
