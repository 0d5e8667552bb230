"""The one config tree: pydantic models mirroring the YAML file, loaded and validated
in one place, with every error reported as ``path (line N): message``.

Stage-specific models live next to their stages; this module joins them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from pipeline.configtypes import ConfigPath, StrictModel, environ_snapshot
from pipeline.errors import ConfigError, FramechainError, ModelFormatError
from pipeline.log import redact
from pipeline.models import model_directories, resolve_model
from stages.annotate import AnnotateConfig
from stages.capture import FileSourceConfig
from stages.decode import DecodeConfig
from stages.detect import CameraDetectConfig, DetectorConfig
from stages.live import HttpSourceConfig, RtspSourceConfig, UsbSourceConfig
from stages.privacy import PrivacyConfig
from stages.rules import RuleConfig
from stages.sink_jsonl import JsonlSinkConfig
from stages.sink_mqtt import MqttSinkConfig
from stages.sink_sqlite import SqliteSinkConfig
from stages.sink_webhook import WebhookSinkConfig
from stages.snapshots import SnapshotConfig
from stages.track import TrackerConfig

CameraName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,48}$")]
SourceConfig = Annotated[
    FileSourceConfig | RtspSourceConfig | HttpSourceConfig | UsbSourceConfig,
    Field(discriminator="kind"),
]
SinkConfig = Annotated[
    SqliteSinkConfig | JsonlSinkConfig | MqttSinkConfig | WebhookSinkConfig,
    Field(discriminator="kind"),
]


class CameraConfig(StrictModel):
    source: SourceConfig = Field(description="Where frames come from.")
    decode: DecodeConfig = Field(default_factory=DecodeConfig, description="Decoding.")
    detect: CameraDetectConfig = Field(
        default_factory=CameraDetectConfig, description="Per-camera detection filters."
    )
    rules: list[RuleConfig] = Field(
        default_factory=list, description="Analytics rules."
    )
    aggregate_s: float | None = Field(
        default=None,
        ge=1,
        description="Emit a counts event per interval of this many seconds.",
    )
    snapshots: SnapshotConfig | None = Field(
        default=None, description="Best crop per track as JPEG, path in its events."
    )
    annotate: AnnotateConfig | None = Field(
        default=None, description="Annotated MP4 and/or MJPEG over HTTP."
    )
    privacy: PrivacyConfig | None = Field(
        default=None,
        description="Hide people (or other classes) in annotated output and snapshots.",
    )

    @model_validator(mode="after")
    def _unique_rule_names(self) -> CameraConfig:
        names = [rule.name for rule in self.rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"rule names must be unique per camera: {duplicates}")
        return self


class SupervisorConfig(StrictModel):
    stop_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="SIGTERM to SIGKILL escalation (R5)."
    )
    restart_backoff_s: float = Field(
        default=0.5, gt=0, description="First restart delay."
    )
    restart_backoff_max_s: float = Field(
        default=10.0, gt=0, description="Restart delay cap."
    )
    max_restarts: int = Field(
        default=5, ge=0, description="Restarts allowed per window (R23)."
    )
    restart_window_s: float = Field(
        default=60.0, gt=0, description="Window for max_restarts."
    )
    heartbeat_timeout_s: float = Field(
        default=10.0, gt=0, description="A running stage silent this long is restarted."
    )
    startup_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="A starting stage silent this long is restarted.",
    )
    watch_config: bool = Field(
        default=True,
        description="Reload rules when the config file changes (as on SIGHUP).",
    )


class CurveConfig(StrictModel):
    secret_key_file: ConfigPath = Field(
        description="This host's certificate (NAME.key_secret from framechain keys)."
    )
    allowed_clients_dir: ConfigPath | None = Field(
        default=None,
        description="Folder of public certificates (NAME.key) allowed to connect to "
        "the tcp:// links this host binds; any other key is refused.",
    )
    server_keys: dict[str, ConfigPath] = Field(
        default_factory=dict,
        description="Endpoint name -> public certificate of the host that binds it.",
    )


class LinksConfig(StrictModel):
    frame_hwm: int = Field(default=16, ge=1, description="Queue bound on frame links.")
    event_hwm: int = Field(
        default=10000, ge=1, description="Queue bound on event links."
    )
    event_linger_ms: int = Field(
        default=1000,
        ge=0,
        le=10000,
        description="How long queued events may finish on exit.",
    )
    curve: CurveConfig | None = Field(
        default=None, description="Encrypt and authenticate every tcp:// link (R16)."
    )
    endpoints: dict[str, str] = Field(
        default_factory=dict,
        description="Override a link's URI by endpoint name, e.g. detect.in: tcp://...",
    )
    record: dict[str, ConfigPath] = Field(
        default_factory=dict,
        description="Record what a stage receives on an endpoint, e.g. "
        "track.cam1.in: cam1.fcrec (replay with framechain replay).",
    )


class HttpConfig(StrictModel):
    listen: str | None = Field(
        default=None,
        pattern=r"^[^:\s]*:\d{1,5}$",
        description="host:port for /metrics, /healthz and /readyz (off when unset).",
    )


class FramechainConfig(StrictModel):
    models_dir: ConfigPath | None = Field(default=None, description="Model directory.")
    runtime_dir: ConfigPath | None = Field(
        default=None,
        description="Folder for ipc:// sockets (default: a private temp dir).",
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="json: one JSON object per log line."
    )
    log_level: str = Field(
        default="INFO",
        pattern=r"^(DEBUG|INFO|WARNING|ERROR)$",
        description="Log level of every stage.",
    )
    cameras: dict[CameraName, CameraConfig] = Field(
        min_length=1, description="Cameras."
    )
    detector: DetectorConfig = Field(
        default_factory=DetectorConfig, description="Model."
    )
    tracker: TrackerConfig = Field(
        default_factory=TrackerConfig, description="Tracker."
    )
    sinks: list[SinkConfig] = Field(min_length=1, description="Where events go.")
    supervisor: SupervisorConfig = Field(
        default_factory=SupervisorConfig, description="Process supervision."
    )
    http: HttpConfig = Field(default_factory=HttpConfig, description="Metrics, health.")
    links: LinksConfig = Field(default_factory=LinksConfig, description="Transport.")

    @model_validator(mode="after")
    def _unique_sink_names(self) -> FramechainConfig:
        names = [sink.name for sink in self.sinks]
        if len(set(names)) != len(names):
            raise ValueError(
                f"sink names must be unique, got {names}; set name: on each"
            )
        return self

    @model_validator(mode="after")
    def _known_recorded_links(self) -> FramechainConfig:
        known = self.endpoint_names()
        unknown = sorted(set(self.links.record) - known)
        if unknown:
            raise ValueError(
                f"links.record: no endpoint {unknown[0]!r}; this config has "
                f"{', '.join(sorted(known))}"
            )
        return self

    def endpoint_names(self) -> set[str]:
        """Every link endpoint of the chain this config describes."""
        names = {"detect.in"} | {f"sink.{s.name}.in" for s in self.sinks}
        for camera, cam in self.cameras.items():
            names |= {f"capture.{camera}.out", f"decode.{camera}.acks"}
            names.add(f"track.{camera}.in")
            if cam.annotate:
                names.add(f"annotate.{camera}.in")
        return names


class LoadedConfig:
    """A validated config plus what loading resolved: its file, the model path, the
    model's class names, and the crop classifier's model path when there is one."""

    def __init__(
        self,
        path: Path,
        config: FramechainConfig,
        model_path: Path,
        class_names: tuple[str, ...],
        classifier_path: Path | None = None,
    ) -> None:
        self.path = path
        self.config = config
        self.model_path = model_path
        self.class_names = class_names
        self.classifier_path = classifier_path


# -- YAML positions --------------------------------------------------------------------
def _line_index(
    node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]
) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, key.value)
            _line_index(value, child, out)
            out[child] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            _line_index(value, (*path, i), out)


def _display(
    loc: tuple[Any, ...], lines: Mapping[tuple[Any, ...], int], data: Any
) -> tuple[str, int | None]:
    """Turn a pydantic error location into ``a.b[0].c`` and its YAML line, skipping
    the union-tag steps (``kind`` values) pydantic inserts with no YAML counterpart."""
    path: tuple[Any, ...] = ()
    node = data
    for step in loc:
        if step == "[key]":
            continue  # pydantic's marker for an invalid mapping key
        if isinstance(node, dict) and step not in node and node.get("kind") == step:
            continue  # a discriminated union's tag
        path = (*path, step)
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            node = None
    text = ""
    for step in path:
        text += (
            f"[{step}]"
            if isinstance(step, int)
            else (f".{step}" if text else str(step))
        )
    line = None
    probe = path
    while probe and line is None:
        line = lines.get(probe)
        probe = probe[:-1]
    return text or "(top level)", line


def _format(path: str, line: int | None, message: str) -> str:
    where = f" (line {line})" if line is not None else ""
    return f"{path}{where}: {message}"


def _message(error: Mapping[str, Any]) -> str:
    kind, message = error["type"], error["msg"]
    if kind == "extra_forbidden":
        return "unknown key; remove it or check its spelling"
    if kind == "missing":
        return "required key is missing"
    message = message.removeprefix("Value error, ")
    value = error.get("input")
    if isinstance(value, str | int | float | bool) and kind not in ("value_error",):
        message += f" (got {redact(repr(value))[:80]})"
    return message


def _read_yaml(path: Path) -> tuple[Any, dict[tuple[Any, ...], int]]:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror})") from e
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}") from e
    lines: dict[tuple[Any, ...], int] = {}
    if node is not None:
        _line_index(node, (), lines)
    return data, lines


def load_config(
    path: str | Path, environ: Mapping[str, str] | None = None
) -> LoadedConfig:
    """Read, interpolate and validate a config file, and resolve its model.

    Touches no camera and no accelerator: only files and the model's metadata.

    Raises:
        ConfigError: with one ``path (line N): message`` line per problem.
    """
    path = Path(path)
    environ = dict(environ) if environ is not None else environ_snapshot()
    data, lines = _read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a YAML mapping of settings")
    base_dir = path.resolve().parent
    try:
        config = FramechainConfig.model_validate(
            data, context={"environ": environ, "base_dir": base_dir}
        )
    except ValidationError as e:
        problems = [
            _format(*_display(err["loc"], lines, data), _message(err))
            for err in e.errors()
        ]
        raise ConfigError(problems[0], problems) from None
    return _resolve(path, config, environ, base_dir, lines)


def _resolve(
    path: Path,
    config: FramechainConfig,
    environ: Mapping[str, str],
    base_dir: Path,
    lines: Mapping[tuple[Any, ...], int],
) -> LoadedConfig:
    """Checks that need more than the YAML itself: the model and its class names."""
    from stages.backends import read_model_info

    model_line = lines.get(("detector", "model"))
    directories = model_directories(config.models_dir, environ, base_dir)
    try:
        model_path = resolve_model(config.detector.model, directories)
        if config.detector.compile and model_path.suffix != ".pt":
            raise ModelFormatError(
                f"detector.compile builds from an Ultralytics .pt checkpoint, and "
                f"{model_path.name} is not one; give the .pt, or drop compile"
            )
        info = read_model_info(model_path)
        names = info.names
        if info.task == "classify":
            raise ModelFormatError(
                f"{model_path.name} is a classify model; give a detect or segment "
                "model here, and the classifier under detector.classifier"
            )
    except FramechainError as e:
        problem = _format("detector.model", model_line, str(e))
        raise ConfigError(problem) from None
    classifier_path = None
    classifier = config.detector.classifier
    if classifier is not None:
        try:
            classifier_path = resolve_model(classifier.model, directories)
            task = read_model_info(classifier_path).task
            if task != "classify":
                raise ModelFormatError(
                    f"{classifier_path.name} is a {task} model; the classifier needs "
                    "an Ultralytics -cls export"
                )
        except FramechainError as e:
            line = lines.get(("detector", "classifier", "model"))
            raise ConfigError(
                _format("detector.classifier.model", line, str(e))
            ) from None
    problems = []
    known = set(names)
    for camera, cam in config.cameras.items():
        wanted: list[tuple[tuple[Any, ...], list[str]]] = []
        if cam.detect.classes:
            wanted.append(
                (("cameras", camera, "detect", "classes"), cam.detect.classes)
            )
        if (
            classifier is not None
            and classifier.classes
            and camera == next(iter(config.cameras))
        ):
            wanted.append((("detector", "classifier", "classes"), classifier.classes))
        if cam.privacy is not None:
            wanted.append(
                (("cameras", camera, "privacy", "classes"), cam.privacy.classes)
            )
        if isinstance(cam.detect.confidence, dict):
            wanted.append(
                (
                    ("cameras", camera, "detect", "confidence"),
                    list(cam.detect.confidence),
                )
            )
        for i, rule in enumerate(cam.rules):
            if getattr(rule, "min_mask_overlap", None) and info.task != "segment":
                text, line = _display(
                    ("cameras", camera, "rules", i, "min_mask_overlap"), lines, None
                )
                problems.append(
                    _format(
                        text,
                        line,
                        f"needs a segmentation model; {model_path.name} is a "
                        f"{info.task} model (use e.g. yolo11n-seg)",
                    )
                )
            if rule.classes:
                wanted.append(
                    (("cameras", camera, "rules", i, "classes"), rule.classes)
                )
        for loc, classes in wanted:
            unknown = [c for c in classes if c not in known]
            if unknown and known:
                text, line = _display(loc, lines, None)
                problems.append(
                    _format(
                        text,
                        line,
                        f"unknown class {unknown[0]!r}; "
                        f"the model knows {', '.join(names[:8])}, ...",
                    )
                )
    if problems:
        raise ConfigError(problems[0], problems)
    return LoadedConfig(path.resolve(), config, model_path, names, classifier_path)
