"""Helpers for live-source tests: a real RTSP server process on 127.0.0.1 and a
supervised chain run in a background thread whose stage statistics the test can
sample while it injects faults."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import free_port, wait_until

from framechain.app import load as load_config
from framechain.app import stage_command, supervisor_for
from pipeline.shm import remove_stale_rings, ring_prefix
from pipeline.supervisor import Supervisor

HELPERS = Path(__file__).parent / "helpers"
SYSTEM_PYTHON = "/usr/bin/python3"


class RtspServer:
    """gst-rtsp-server (Debian python3-gi) serving ``clip`` at rtsp://127.0.0.1:PORT/live."""

    def __init__(
        self, clip: Path, user: str | None = None, password: str | None = None
    ):
        self.clip = clip
        self.port = free_port()
        self.auth = [user, password] if user is not None else []
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/live"

    def start(self) -> None:
        argv = [
            SYSTEM_PYTHON,
            str(HELPERS / "rtsp_server.py"),
            str(self.port),
            str(self.clip),
            *self.auth,
        ]
        try:
            self.process = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        except FileNotFoundError:
            pytest.fail(
                f"{SYSTEM_PYTHON} not found: install python3-gi and "
                "gir1.2-gst-rtsp-server-1.0 (.ci/run does)"
            )
        line = self.process.stdout.readline() if self.process.stdout else ""
        if line.strip() != "ready":
            self.process.kill()
            pytest.fail(
                "RTSP server did not start (needs Debian python3-gi and "
                f"gir1.2-gst-rtsp-server-1.0): {self.process.stderr.read()[-800:]}"
            )

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)


class ChainRun:
    """Runs a config under the real supervisor (real stage processes) in a thread,
    sampling every stage's heartbeat statistics as they arrive."""

    def __init__(
        self,
        tmp: Path,
        config: dict[str, Any],
        wrap: Callable[[str, list[str]], list[str]] | None = None,
    ) -> None:
        """``wrap(stage, argv)`` may change how a stage is started (in a namespace)."""
        self.path = tmp / "chain.yaml"
        self.path.write_text(yaml.safe_dump(config, sort_keys=False))
        loaded = load_config(self.path)
        self.runtime = tmp / "run"
        self.runtime.mkdir(mode=0o700, exist_ok=True)
        plain = stage_command(loaded.path, self.runtime)

        def command(name: str, control: str | None) -> list[str]:
            argv = plain(name, control)
            return argv if wrap is None else wrap(name, argv)

        self.supervisor = supervisor_for(
            loaded, self.runtime, command, watch_file=False
        )
        self.samples: list[tuple[float, dict[str, dict[str, Any]]]] = []
        self.code: int | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.code = self.supervisor.run(on_tick=self._sample)
        remove_stale_rings(ring_prefix(self.runtime))

    def _sample(self, supervisor: Supervisor) -> None:
        stages = supervisor.snapshot()["stages"]  # a camera group's members each
        stats = {n: dict(s["stats"]) for n, s in stages.items()}
        if not self.samples or time.monotonic() - self.samples[-1][0] >= 0.5:
            self.samples.append((time.monotonic(), stats))

    def stats(self, stage: str) -> dict[str, Any]:
        """A stage's last stats, by its own name also inside a camera group."""
        return dict(self.supervisor.snapshot()["stages"][stage]["stats"])

    def start(self) -> ChainRun:
        self._thread.start()
        return self

    def wait_for(
        self, condition: Callable[[], bool], timeout: float, what: str
    ) -> None:
        wait_until(condition, timeout, what, alive=self._thread.is_alive)

    def stop(self, timeout: float = 30) -> int:
        self.supervisor.stop_requested = True
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the chain did not stop"
        assert self.code is not None
        return self.code
