"""The track kind: one process per camera, and the rule kinds its config holds."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any

import msgspec
from pydantic import Field

from pipeline.checkpoint import CheckpointFile
from pipeline.config import ResolveContext, load_config
from pipeline.demand import DemandProbe, demand_path
from pipeline.errors import ConfigError
from pipeline.eventlinks import EventLinks
from pipeline.metrics import frame_age_samples, frames_dropped, frames_through
from pipeline.registry import (
    Instance,
    PlanContext,
    Registry,
    Sample,
    Section,
    Slot,
    StageKind,
    StatsView,
    each_camera,
    read_stats,
)
from pipeline.retention import PRUNED_HELP
from pipeline.stageplan import RUN_ID_VARIABLE, RuntimeStats, StagePlan
from pipeline.topology import FULL_FRAMES, Port
from pipeline.transport import LinkOptions
from stages.record.config import wants_clip
from stages.track.config import PrivacyConfig, SnapshotConfig, TrackerConfig
from stages.track.events import TRACK_EVENTS
from stages.track.recovery import Recovery
from stages.track.rules import BUILTIN_RULES, RuleConfig, register_rule
from stages.track.stats import TrackStats

PORTS = (
    Port("detections", "detections", "in"),
    Port("acks", "acks", "out", link="events", upstream=True),
    # addressed to each sink: route("events", sink) (pipeline.outbox)
    Port("events", "events", "out", link="events"),
    Port("stored", "stored", "in", link="events", endpoint="stored", upstream=True),
    # a copy of each new event for the services beside the chain, dropped
    # whenever one cannot take it: a service never holds counting back
    Port("feed", "feed", "out", link="events", best_effort=True),
    # small copies of tracked frames for the API's live pictures, made only
    # while someone watches (pipeline.demand), dropped rather than queued
    Port(
        "preview",
        "preview",
        "out",
        options=LinkOptions(hwm=2, linger_ms=0),
        lossy=True,
    ),
    # tracked frames with their pixels and overlay, for whoever draws them: two
    # frames queued at most, dropped rather than ever slow counting
    Port(
        "annotate",
        "tracked",
        "out",
        options=LinkOptions(hwm=2, linger_ms=0),
        lossy=True,
    ),
)


def _pixels(loaded: Any, camera: str) -> Any:
    """Snapshots crop each track from the full frame."""
    return FULL_FRAMES if loaded.config.cameras[camera].snapshots else None


def _reload_rules(context: PlanContext, camera: str) -> list[RuleConfig]:
    """The rules of one camera, read again from the config file (SIGHUP).

    Raises:
        ConfigError: the edited file is invalid (the caller keeps its rules).
    """
    loaded = context.loaded
    cameras = load_config(loaded.path, loaded.registry).config.cameras
    if camera not in cameras:
        raise ConfigError(
            f"camera {camera!r} is no longer in {loaded.path}; restart to remove it"
        )
    return list(cameras[camera].rules)


def fingerprint(config: Any, camera: Any) -> str:
    """What a camera's checkpoint depends on besides its rules: its source, decode
    and detect settings, the tracker and the detector. A checkpoint made under other
    settings is not resumed from (rules may change: SIGHUP reloads them, and a rule
    whose settings did not change keeps its state)."""
    parts = {
        "camera": camera.model_dump(mode="json", exclude={"rules"}),
        "tracker": config.tracker.model_dump(mode="json"),
        "detector": config.detector.model_dump(mode="json"),
    }
    return hashlib.sha256(msgspec.json.encode(parts)).hexdigest()[:16]


def _links(config: Any, camera: Any) -> EventLinks | None:
    """The URLs of the camera's events' media, when the API serves them."""
    if not config.http.api:
        return None
    clips = getattr(camera, "clips", None)  # the record kind's section
    return EventLinks(
        config.http.base_url(),
        (lambda kind, track: wants_clip(clips, kind, track)) if clips else None,
    )


def _plan(context: PlanContext, instance: Instance) -> StagePlan:
    loaded = context.loaded
    config = loaded.config
    camera_name, camera = instance.target, instance.config
    name = f"track.{camera_name}"
    sinks = context.wiring.targets(name, "events")
    annotate = context.wiring.connected(name, "annotate")
    feed = context.wiring.connected(name, "feed")
    preview = context.wiring.connected(name, "preview")
    kinds = loaded.registry.implementations("rule")

    def build() -> Any:
        from stages.track.preview import PreviewTap
        from stages.track.stage import TrackStage

        return TrackStage(
            camera_name,
            config.tracker,
            camera.rules,
            lambda: _reload_rules(context, camera_name),
            snapshots=camera.snapshots,
            aggregate_s=camera.aggregate_s,
            annotate=annotate,
            feed=feed,
            preview=PreviewTap(
                config.http.preview,
                DemandProbe(demand_path(context.runtime_dir, "preview", camera_name)),
            )
            if preview
            else None,
            links=_links(config, camera),
            privacy=camera.privacy,
            kinds=kinds,
            recovery=Recovery(
                sinks=tuple(sinks),
                checkpoint=CheckpointFile(
                    Path(config.state_dir) / loaded.path.stem / f"{camera_name}.ckpt"
                ),
                fingerprint=fingerprint(config, camera),
                run_id=os.environ.get(RUN_ID_VARIABLE, ""),
                acknowledged=True,
            ),
        )

    return StagePlan(name, build)


def _resolve(context: ResolveContext) -> None:
    """Class names in rules and privacy, and mask-overlap zones, against the model
    the detect kind resolved.

    Raises:
        ConfigError: an unknown class, or mask overlap without a segmentation model.
    """
    from stages.detect.kind import unknown_classes

    model = context.resolved.get("detect")
    if model is None:
        return
    problems = []
    wanted: list[tuple[tuple[Any, ...], list[str]]] = []
    for camera, cam in context.config.cameras.items():
        if cam.privacy is not None:
            wanted.append(
                (("cameras", camera, "privacy", "classes"), cam.privacy.classes)
            )
        for i, rule in enumerate(cam.rules):
            if getattr(rule, "min_mask_overlap", None) and model.task != "segment":
                problems.append(
                    context.problem(
                        ("cameras", camera, "rules", i, "min_mask_overlap"),
                        f"needs a segmentation model; {model.model_path.name} is a "
                        f"{model.task} model (use e.g. yolo11n-seg)",
                    )
                )
            if rule.classes:
                wanted.append(
                    (("cameras", camera, "rules", i, "classes"), rule.classes)
                )
    problems += unknown_classes(context, model.class_names, wanted)
    if problems:
        raise ConfigError(problems[0], problems)


def _metrics(name: str, stats: StatsView, _chain: StatsView) -> Iterable[Sample]:
    camera = name.partition(".")[2]
    track = read_stats(stats, TrackStats)
    yield frames_through("track", camera, track.frames)
    yield Sample(
        "fps", "gauge", "Frames per second tracked", {"camera": camera}, track.fps
    )
    yield from frame_age_samples(
        track.frame_age_p50_s, track.frame_age_p99_s, camera, "track"
    )
    yield frames_dropped(
        camera, "annotate", read_stats(stats, RuntimeStats).dropped.get("annotate", 0)
    )
    yield Sample(
        "feed_dropped",
        "counter",
        "Events not fed to a service beside the chain while it could not take them",
        {"camera": camera},
        read_stats(stats, RuntimeStats).dropped.get("feed", 0),
    )
    for key, count in track.counts.items():
        rule, _, what = key.partition("/")
        yield Sample(
            "rule_events",
            "counter",
            "Events produced by each rule (class/direction or event kind)",
            {"camera": camera, "rule": rule, "what": what},
            count,
        )
    yield Sample(
        "events_unstored",
        "gauge",
        "Events produced and not yet stored by every sink (held for redelivery)",
        {"camera": camera},
        track.outbox,
    )
    yield Sample(
        "pruned",
        "counter",
        PRUNED_HELP,
        {"store": f"snapshots.{camera}", "what": "snapshots"},
        track.snapshots_pruned,
    )
    yield Sample(
        "previews",
        "counter",
        "Small copies of tracked frames made for the API's live pictures (only "
        "while someone watches)",
        {"camera": camera},
        track.previews,
    )
    yield Sample(
        "checkpoints",
        "counter",
        "Track state checkpoints written",
        {"camera": camera},
        track.checkpoints,
    )
    yield Sample(
        "checkpoint_bytes",
        "gauge",
        "Size of the latest track state checkpoint",
        {"camera": camera},
        track.checkpoint_bytes,
    )
    if track.latency is not None:
        yield Sample(
            "end_to_end_seconds",
            "histogram",
            "Capture to tracked-and-evaluated time",
            {"camera": camera},
            track.latency,
        )


def _summary(_loaded: Any, target: str, stats: StatsView) -> list[str]:
    track = read_stats(stats, TrackStats)
    lines = [
        f"  camera {target}: {track.frames} frames at {track.fps:.1f} fps, frame age "
        f"p50 {1000 * track.frame_age_p50_s:.0f} ms, p99 "
        f"{1000 * track.frame_age_p99_s:.0f} ms"
    ]
    for key in sorted(track.counts):
        rule, *what = key.split("/")  # rule/class/direction or rule/event kind
        lines.append(f"    {rule:<16} {' '.join(what):<17} {track.counts[key]:>6}")
    if not track.counts:
        lines.append("    no line crossings")
    if track.snapshots_pruned:
        lines.append(f"    {track.snapshots_pruned} old snapshots pruned by retention")
    return lines


def _sections() -> Sequence[Section]:
    return (
        Section(
            "root", "tracker", TrackerConfig, "Tracker.", default_factory=TrackerConfig
        ),
        Section(
            "camera",
            "aggregate_s",
            Annotated[float, Field(ge=1, le=86400)] | None,
            "Emit a counts event per interval of this many seconds (at least 1).",
            default=None,
        ),
        Section(
            "camera",
            "snapshots",
            SnapshotConfig | None,
            "Best crop per track as JPEG, path in its events.",
            default=None,
        ),
        Section(
            "camera",
            "privacy",
            PrivacyConfig | None,
            "Hide people (or other classes) in annotated output and snapshots.",
            default=None,
        ),
    )


KIND = StageKind(
    name="track",
    role="transform",
    scope="camera",
    instances=each_camera(),
    plan=_plan,
    ports=PORTS,
    pixels=_pixels,
    sections=tuple(_sections()),
    reloads=True,
    groupable=True,
    progress=("done", lambda stats: read_stats(stats, TrackStats).next_seq),
    resolve=_resolve,
    metrics=_metrics,
    summary=_summary,
)


def register(registry: Registry) -> None:
    registry.add_slot(
        Slot(
            "rule", "camera", "rules", "Analytics rules.", many=True, default_empty=True
        )
    )
    for rule in BUILTIN_RULES:
        register_rule(registry, rule)
    registry.events.add(KIND.name, TRACK_EVENTS)
    registry.register(KIND)
