"""What ``framechain run`` shows a person: a progress bar while files play and a
summary at the end, both built from the stages' heartbeat statistics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from pipeline.config import LoadedConfig
from pipeline.log import redact
from pipeline.registry import StageKind, read_stats
from pipeline.stageplan import RuntimeStats
from pipeline.supervisor import Supervisor


class Progress:
    """A tqdm bar over frames done, out of the files' frame counts when known; the
    stage kinds say which of their stats count (``StageKind.progress``)."""

    def __init__(self, enabled: bool, kinds: Mapping[str, StageKind]) -> None:
        self.enabled = enabled
        self.kinds = kinds
        self._bar: Any = None

    def _read(self, supervisor: Supervisor, role: str) -> list[int]:
        counts = []
        for name, stage in supervisor.snapshot()["stages"].items():
            kind = self.kinds.get(name)
            if kind is not None and kind.progress is not None:
                which, count = kind.progress
                if which == role:
                    counts.append(count(stage["stats"]))
        return counts

    def update(self, supervisor: Supervisor) -> None:
        if not self.enabled:
            return
        done = sum(self._read(supervisor, "done"))
        totals = self._read(supervisor, "total")
        total = sum(totals) if totals and min(totals) > 0 else None
        if self._bar is None:
            if not done:
                return
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, unit="frame", dynamic_ncols=True, leave=False, disable=None
            )
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def print_summary(
    loaded: LoadedConfig,
    supervisor: Supervisor,
    kinds: Mapping[str, StageKind],
    file: IO[str],
) -> None:
    """Per camera what its stages report (frames, fps, frame age, counts, drops),
    then the stages that serve every camera, then CPU time and restarts."""
    lines = ["", "framechain summary"]
    by_camera: dict[str, list[str]] = {camera: [] for camera in loaded.config.cameras}
    shared: list[str] = []
    stages = supervisor.snapshot()["stages"]  # a camera group's members each
    # per camera the stage nearest the events first (track's line heads its
    # block): ``kinds`` lists stages in the chain's order
    rank: dict[int, int] = {}
    for kind in kinds.values():
        rank.setdefault(id(kind), len(rank))
    for name in sorted(kinds, key=lambda n: -rank[id(kinds[n])]):
        kind, target = kinds[name], name.partition(".")[2]
        if kind.summary is None or name not in stages:
            continue
        found = kind.summary(loaded, target, stages[name]["stats"])
        if target in by_camera:
            by_camera[target] += found
        else:
            shared[:0] = found
    for block in by_camera.values():
        lines += block
    lines += shared
    cpu = ", ".join(
        f"{name} {read_stats(child.stats, RuntimeStats).cpu_s:.1f}s"
        for name, child in supervisor.children.items()
    )
    lines.append(f"  cpu time: {cpu}")
    if supervisor.restart_count:
        lines.append(f"  stage restarts: {supervisor.restart_count}")
    print("\n".join(lines), file=file)


def problems(loaded: LoadedConfig, supervisor: Supervisor) -> list[str]:
    """What the stages say went wrong though the run went on (``problem`` in
    their stats): one line per camera, naming its source, then one per stage that
    serves every camera."""
    by_camera: dict[str, list[str]] = {}
    shared = []
    for name, stage in supervisor.snapshot()["stages"].items():
        said = read_stats(stage["stats"], RuntimeStats).problem
        target = name.partition(".")[2]
        if said and target in loaded.config.cameras:
            by_camera.setdefault(target, []).append(said)
        elif said:
            shared.append(f"{name}: {said}")
    lines = []
    for camera, told in by_camera.items():
        source = loaded.config.cameras[camera].source
        where = redact(str(getattr(source, "path", "") or getattr(source, "url", "")))
        named = any(where in line for line in told)
        lines.append(
            f"camera {camera}{'' if named else f' ({where})'}: " + "; ".join(told)
        )
    return lines + shared
