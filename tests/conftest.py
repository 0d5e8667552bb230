"""Shared fixtures: real assets from ../shared/assets, configs in tmp_path, and
helpers that run framechain as real processes."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

# Ultralytics must never reach for the network in tests (settings sync, downloads).
os.environ.setdefault("YOLO_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
ASSETS = Path(
    os.environ.get("FRAMECHAIN_TEST_ASSETS", REPO.parent / "shared" / "assets")
)


MODULE_LINES_ADVISED = 400


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Advice, not a failure: modules past a few hundred lines usually hold more
    than one job; split them where their jobs part, not where a counter says."""
    large = sorted(
        (lines, str(path.relative_to(REPO)))
        for package in ("pipeline", "stages", "framechain", "benchmarks")
        for path in (REPO / package).rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > MODULE_LINES_ADVISED
    )
    if large:
        terminalreporter.write_line(
            f"advice: modules over {MODULE_LINES_ADVISED} lines, to split at their "
            "seams: " + ", ".join(f"{name} ({lines})" for lines, name in large)
        )


@pytest.fixture(scope="session")
def assets() -> Path:
    if not (ASSETS / "yolo11n.onnx").is_file():
        pytest.fail(
            f"test assets not found in {ASSETS}; put ../shared beside the repo "
            "or set FRAMECHAIN_TEST_ASSETS"
        )
    return ASSETS


def chain_env() -> dict[str, str]:
    env = dict(os.environ)
    env["FRAMECHAIN_MODELS"] = str(ASSETS)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("FRAMECHAIN_DEBUG", None)
    return env


def framechain(
    *args: str,
    timeout: float = 180,
    env_extra: dict[str, str] | None = None,
    **kwargs: Any,
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "framechain.cli", *args],
        cwd=REPO,
        env={**chain_env(), **(env_extra or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def camera_config(
    source: Path, rules: list[dict[str, Any]] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "source": {"kind": "file", "path": str(source)},
        "rules": rules or [],
        **extra,
    }


def write_config(path: Path, cameras: dict[str, Any], **sections: Any) -> Path:
    config: dict[str, Any] = {
        "cameras": cameras,
        "sinks": [{"kind": "sqlite", "path": str(path.parent / "events.db")}],
        "detector": {"model": "yolo11n.onnx"},
        **sections,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def read_events(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as connection:
        connection.row_factory = sqlite3.Row
        rows = connection.execute(
            "SELECT * FROM events ORDER BY stream_id, seq, event_id"
        )
        return [dict(row) for row in rows]


def poll_store(db: Path, sql: str, *params: Any) -> int | None:
    """One number from the events store that a run is writing, or None while the
    sink has not created it (the file appears before its table). Read-only, so a
    poll never creates the file itself."""
    try:
        uri = f"file:{db}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=1)) as store:
            value = store.execute(sql, params).fetchone()[0]
    except sqlite3.Error:
        return None
    return None if value is None else int(value)


# Rules for crowd.mp4 (800×450) shared by the chain tests.
CROWD_LINE = {
    "kind": "line",
    "name": "mid",
    "start": [0, 300],
    "end": [800, 300],
    "anchor": "center",
    "classes": ["person"],
}
CROWD_WHOLE_FRAME = {
    "kind": "zone",
    "name": "all",
    "anchor": "center",
    "polygon": [[0, 0], [800, 0], [800, 450], [0, 450]],
}
CROWD_LEFT_HALF = {
    "kind": "zone",
    "name": "left",
    "anchor": "center",
    "polygon": [[0, 0], [400, 0], [400, 450], [0, 450]],
}


def spawn_run(config: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``framechain run CONFIG`` in the background, output captured, in a process
    group of its own (its stages join it) for Ctrl-C and for ``end_run``."""
    return subprocess.Popen(
        [sys.executable, "-m", "framechain.cli", "run", str(config), "--no-progress"],
        cwd=REPO,
        env=env or chain_env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def run_to_end(
    config: Path, env: dict[str, str] | None = None, timeout: float = 240
) -> tuple[str, str]:
    """``framechain run CONFIG`` to its end, which must be exit 0; its stdout and
    stderr."""
    process = spawn_run(config, env)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        end_run(process)
    assert process.returncode == 0, stderr[-3000:]
    return stdout, stderr


def end_run(process: subprocess.Popen[str]) -> None:
    """A test's cleanup for ``spawn_run``: SIGKILL to the whole group, supervisor and
    stages, so that a failed test neither waits on output pipes a stage still holds
    nor leaves stages running."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    if process.returncode is None:
        process.communicate(timeout=30)


@pytest.fixture(scope="session")
def seg_onnx(assets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """yolo11n-seg.pt exported to ONNX (dynamic shapes) by `framechain export`, once
    per session: the shared assets hold the segmentation model only as .pt."""
    out = tmp_path_factory.mktemp("seg-model")
    result = framechain(
        "export",
        str(assets / "yolo11n-seg.pt"),
        "--format",
        "onnx",
        "--out",
        str(out),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (path,) = out.glob("*.onnx")
    return path


@pytest.fixture(scope="session")
def cls_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Ultralytics -cls model exported to ONNX by `framechain export`. The shared
    assets hold no trained classifier and nothing may be downloaded, so this is
    YOLO11n-cls built from its architecture (seeded, untrained): its labels mean
    nothing, but it is a real export, so preprocessing, batching and parity with
    Ultralytics' predictor are tested for real."""
    import torch
    from ultralytics import YOLO

    out = tmp_path_factory.mktemp("cls-model")
    torch.manual_seed(0)
    checkpoint = out / "yolo11n-cls.pt"
    YOLO("yolo11n-cls.yaml").save(str(checkpoint))
    result = framechain(
        "export",
        str(checkpoint),
        "--format",
        "onnx",
        "--imgsz",
        "224",
        "--cache",
        str(out / "cache"),
        "--out",
        str(out),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return out / "yolo11n-cls.onnx"


@pytest.fixture(scope="session")
def short_clip(tmp_path_factory: pytest.TempPathFactory, assets: Path) -> Path:
    """The first 90 frames of the crowd clip."""
    clip = tmp_path_factory.mktemp("clips") / "crowd-90.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(assets / "crowd.mp4"),
            "-frames:v",
            "90",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-bf",
            "0",
            str(clip),
        ],
        check=True,
    )
    return clip


def free_port() -> int:
    """A free port below the kernel's ephemeral range. Tests stop and restart
    servers on their port while clients keep retrying it; a port in that range can
    be handed to one of those clients as its source port, and a connect to it then
    succeeds to itself (TCP self-connect) and holds the port, so the server cannot
    come back."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in random.sample(range(max(1024, low - 12000), low), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port below {low}")


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds, or as soon
    as ``alive`` (the thing being waited on) says it has stopped."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        assert alive is None or alive(), f"stopped early, waiting for {what}"
        time.sleep(0.1)


def of_kind(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] == kind]


def children(parent: int) -> dict[int, str]:
    """pid → process title (the argv of a stage still starting) of ``parent``'s
    children."""
    children = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").strip()
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(stat[1]) == parent:
            children[int(entry.name)] = title.decode(errors="replace")
    return children


def stage_pid(name: str, supervisor_pid: int) -> int | None:
    """The pid of a stage process, found by its process title and parent."""
    titles = children(supervisor_pid).items()
    return next((pid for pid, title in titles if title == f"framechain {name}"), None)


def running_stage_pid(name: str, supervisor_pid: int) -> int:
    """Like ``stage_pid``, for a stage that must be running."""
    pid = stage_pid(name, supervisor_pid)
    assert pid is not None, f"no stage {name} under {supervisor_pid}"
    return pid
