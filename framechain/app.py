"""The application: the built-in stage kinds in one registry, config loading
against it, and the command that runs one stage process. The only place besides
the CLI that knows both the framework and its stages."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from pipeline.config import LoadedConfig, load_config
from pipeline.registry import Registry
from pipeline.supervisor import Supervisor

Command = Callable[[str, str | None], list[str]]


def builtin_registry() -> Registry:
    """A registry holding every stage and rule kind framechain ships."""
    from stages import register

    registry = Registry()
    register(registry)
    return registry


def load(path: str | Path, environ: Mapping[str, str] | None = None) -> LoadedConfig:
    """Load and validate a config against the built-in kinds and its ``plugins``.

    Raises:
        ConfigError: one ``path (line N): message`` line per problem.
    """
    return load_config(path, builtin_registry(), environ)


def stage_command(config_path: Path, runtime_dir: Path) -> Command:
    """argv for ``framechain stage NAME`` with this interpreter (no ``--control``:
    the stage runs without a supervisor). A supervised stage also gets this
    process's pid, to exit when it dies."""

    def command(name: str, control_uri: str | None) -> list[str]:
        argv = [sys.executable, "-m", "framechain.cli", "stage", name]
        argv += ["--config", str(config_path), "--runtime-dir", str(runtime_dir)]
        if control_uri:
            argv += ["--control", control_uri, "--supervisor-pid", str(os.getpid())]
        return argv

    return command


def supervisor_for(
    loaded: LoadedConfig,
    runtime_dir: Path,
    command: Command | None = None,
    watch_file: bool = True,
) -> Supervisor:
    """The supervisor of a loaded config's chain (``command``: how to start a
    stage, by default ``stage_command``; ``watch_file``: reload rules when the
    config file changes, as ``supervisor.watch_config`` asks)."""
    from framechain.plan import stage_names, stage_roles

    return Supervisor(
        stage_names(loaded),
        command or stage_command(loaded.path, runtime_dir),
        runtime_dir,
        loaded.config.supervisor,
        stage_roles(loaded),
        config_path=loaded.path if watch_file else None,
    )
