"""The one config tree: pydantic models mirroring the YAML file, loaded and validated
in one place, with every error reported as ``path (line N): message``.

The framework owns the frame of the tree (cameras, supervisor, links, http, logging,
``plugins``); every other key, and every union such as a camera's ``source`` or the
``sinks`` list, comes from the registered stage kinds, so this module names none of
them. The models are built once per registry.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    ValidationError,
    create_model,
    model_validator,
)

from pipeline.configerrors import problems
from pipeline.configtypes import ConfigPath, StrictModel, environ_snapshot
from pipeline.errors import ConfigError, FramechainError
from pipeline.registry import Registry, Section, Slot
from pipeline.settings import HttpConfig, LinksConfig, SupervisorConfig
from pipeline.yamlmap import Lines, display, format_problem
from pipeline.yamlsafe import read_yaml

# where appliances keep state when the config lives in a read-only folder
STATE_DIR_VARIABLE = "FRAMECHAIN_STATE_DIR"

CameraName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,48}$")]


class ChainBase(StrictModel):
    """The keys of the tree that belong to the framework itself."""

    plugins: list[str] = Field(
        default_factory=list,
        description="Python modules that register more stage kinds (each has a "
        "register(registry) function); imported before the rest is validated.",
    )
    models_dir: ConfigPath | None = Field(default=None, description="Model directory.")
    runtime_dir: ConfigPath | None = Field(
        default=None,
        description="Folder for ipc:// sockets (default: a private temp dir).",
    )
    state_dir: ConfigPath = Field(
        default_factory=lambda: os.environ.get(STATE_DIR_VARIABLE, "state"),
        validate_default=True,
        description="Folder of the checkpoints that let a restarted stage, or a "
        "run after a crash, resume where it stopped (<state_dir>/<config name>/; "
        f"default ${STATE_DIR_VARIABLE}, else state/ beside the config).",
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="json: one JSON object per log line."
    )
    log_level: str = Field(
        default="INFO",
        pattern=r"^(DEBUG|INFO|WARNING|ERROR)$",
        description="Log level of every stage.",
    )
    supervisor: SupervisorConfig = Field(
        default_factory=SupervisorConfig, description="Process supervision."
    )
    http: HttpConfig = Field(default_factory=HttpConfig, description="Metrics, health.")
    links: LinksConfig = Field(default_factory=LinksConfig, description="Transport.")


def _slot_type(registry: Registry, slot: Slot) -> Any:
    variants = registry.variants(slot.name)
    if not variants:
        raise ValueError(f"config slot {slot.name!r} has no registered kind")
    union: Any = variants[0]
    for variant in variants[1:]:
        union = union | variant
    member = (
        Annotated[union, Field(discriminator="kind")] if len(variants) > 1 else union
    )
    if not slot.many:
        return member
    return Annotated[
        list[member],  # type: ignore[valid-type]
        AfterValidator(_unique_names(slot.key)),
    ]


def _fields(
    registry: Registry, sections: list[Section], slots: list[Slot]
) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for section in sections:
        options: dict[str, Any] = {"description": section.description}
        if section.default_factory is not None:
            options["default_factory"] = section.default_factory
        elif section.default is not ...:
            options["default"] = section.default
        if section.min_length is not None:
            options["min_length"] = section.min_length
        fields[section.key] = (section.annotation, Field(**options))
    for slot in slots:
        options = {"description": slot.description}
        if slot.default_empty:
            options["default_factory"] = list
        if slot.min_length is not None:
            options["min_length"] = slot.min_length
        fields[slot.key] = (_slot_type(registry, slot), Field(**options))
    return fields


def _unique_names(key: str) -> Callable[[list[Any]], list[Any]]:
    """A list validator: every entry of the list ``key`` has a name of its own."""

    def check(items: list[Any]) -> list[Any]:
        names = [item.name for item in items]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"every entry of {key} needs a name of its own; {duplicates} "
                "appear more than once (set name: on each)"
            )
        return items

    return check


def build_models(registry: Registry) -> type[ChainBase]:
    """The root model of a config for the kinds in ``registry``."""
    camera_fields = _fields(
        registry, registry.sections("camera"), registry.slots("camera")
    )
    camera: type[BaseModel] = create_model(
        "CameraConfig",
        __base__=StrictModel,
        **camera_fields,
    )
    root_fields = _fields(registry, registry.sections("root"), registry.slots("root"))
    root_fields["cameras"] = (
        dict[CameraName, camera],  # type: ignore[valid-type]
        Field(min_length=1, description="Cameras."),
    )

    def check(self: ChainBase) -> ChainBase:
        known = registry.endpoint_names(self)
        unknown = sorted(set(self.links.record) - known)
        if unknown:
            raise ValueError(
                f"links.record: no endpoint {unknown[0]!r}; this config has "
                f"{', '.join(sorted(known))}"
            )
        return self

    validators: dict[str, Any] = {"_chain_checks": model_validator(mode="after")(check)}
    model: type[ChainBase] = create_model(
        "FramechainConfig",
        __base__=ChainBase,
        __validators__=validators,
        **root_fields,
    )
    return model


@dataclass(frozen=True, slots=True)
class ResolveContext:
    """What a kind's ``resolve`` hook sees: the validated config, the environment
    and folder it was loaded with, what earlier kinds resolved, and ``where`` to
    turn a key path into ``path (line N)`` for a message."""

    config: Any
    environ: Mapping[str, str]
    base_dir: Path
    resolved: Mapping[str, Any]
    lines: Lines
    registry: Registry | None = None

    def problem(self, path: tuple[Any, ...], message: str) -> str:
        return format_problem(*display(path, self.lines, None), message)


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A validated config plus what loading resolved: its file, the registry it was
    validated against, and each kind's ``resolve`` result by kind name (the model
    path and class names, for instance)."""

    path: Path
    config: Any
    registry: Registry
    resolved: Mapping[str, Any] = field(default_factory=dict)


def load_config(
    path: str | Path,
    registry: Registry,
    environ: Mapping[str, str] | None = None,
) -> LoadedConfig:
    """Read, interpolate and validate a config file, then let every kind resolve what
    needs more than the YAML (model files).

    Touches no camera and no accelerator: only files and the model's metadata.

    Raises:
        ConfigError: with one ``path (line N): message`` line per problem.
    """
    path = Path(path)
    environ = dict(environ) if environ is not None else environ_snapshot()
    data, lines = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a YAML mapping of settings")
    try:
        return _validate(path, data, lines, registry, environ)
    except FramechainError:
        raise
    except (RecursionError, MemoryError, OverflowError) as e:
        raise ConfigError(
            f"{path}: the config is too large or too deeply nested to validate "
            f"({type(e).__name__})"
        ) from None


def _validate(
    path: Path,
    data: dict[str, Any],
    lines: Lines,
    registry: Registry,
    environ: Mapping[str, str],
) -> LoadedConfig:
    plugins = data.get("plugins", [])
    if isinstance(plugins, list) and all(isinstance(p, str) for p in plugins):
        registry.load_plugins(plugins)
    base_dir = path.resolve().parent
    model = build_models(registry)
    try:
        config = model.model_validate(
            data, context={"environ": environ, "base_dir": base_dir}
        )
    except ValidationError as e:
        found = problems(e, model, data, lines)
        raise ConfigError(found[0], found) from None
    resolved: dict[str, Any] = {}
    for kind in registry.kinds():
        if kind.resolve is None or kind.name in resolved:
            continue
        context = ResolveContext(config, environ, base_dir, resolved, lines, registry)
        try:
            resolved[kind.name] = kind.resolve(context)
        except ConfigError:
            raise
        except FramechainError as e:
            raise ConfigError(str(e)) from None
    return LoadedConfig(path.resolve(), config, registry, resolved)
