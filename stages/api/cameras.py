"""Each camera's state for the API, from the supervisor's status file: its
source's state, its chain's health (``pipeline.observability.readiness``), and
its rates, measured between status snapshots (the stages report counts)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pipeline.observability import Kinds, readiness

STALE_S = 5.0
"""A status file older than this: the supervisor is gone (or stopped)."""
RATE_WINDOW_S = 5.0


class CameraBoard:
    """Reads the status file at most every ``every_s`` and keeps a few seconds
    of snapshots, to give each camera's frame rates in and out. Requests run on
    several threads: the history is read and changed under a lock."""

    def __init__(
        self,
        read: Callable[[], dict[str, Any] | None],
        kinds: Kinds,
        rules: dict[str, Sequence[tuple[str, str]]],
        every_s: float = 0.5,
    ) -> None:
        """``rules``: each camera's (rule name, rule kind), in config order."""
        self.read = read
        self.kinds = kinds
        self.rules = rules
        self.every_s = every_s
        self._history: deque[tuple[float, dict[str, Any]]] = deque()
        self._read_at = 0.0
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return list(self.rules)

    def snapshot(self) -> dict[str, Any] | None:
        """The supervisor's last snapshot, or None when it is stale or missing."""
        with self._lock:
            return self._snapshot()

    def _snapshot(self) -> dict[str, Any] | None:
        now = time.monotonic()
        if now - self._read_at >= self.every_s:
            self._read_at = now
            status = self.read()
            if status is not None:
                written = float(status.get("written", 0.0))
                if not self._history or written > self._history[-1][0]:
                    self._history.append((written, status))
                # one snapshot older than the window is kept: rates span at
                # least the window, however seldom the board is asked (two
                # snapshots a moment apart may fall between the stages'
                # heartbeats and show no progress)
                while (
                    len(self._history) > 2
                    and written - self._history[1][0] > RATE_WINDOW_S
                ):
                    self._history.popleft()
        if not self._history or time.time() - self._history[-1][0] > STALE_S:
            return None
        return self._history[-1][1]

    def cameras(self) -> list[dict[str, Any]]:
        status = self.snapshot()
        if status is None:
            return [self._unknown(name) for name in self.rules]
        health = readiness(status, self.kinds)[1]["cameras"]
        stages = status["stages"]
        frames = {c: _stats(stages, f"track.{c}").get("frames", 0) for c in self.rules}
        detected = sum(frames.values()) or 1
        return [
            self._camera(name, health.get(name, {}), stages, frames[name] / detected)
            for name in self.rules
        ]

    def state(self, name: str) -> str:
        """One camera's state in words, for an error line: online, offline
        (and why), unknown."""
        found = [c for c in self.cameras() if c["name"] == name]
        if not found:
            return "unknown"
        camera = found[0]
        return camera["state"] + (f" ({camera['reason']})" if camera["reason"] else "")

    def _camera(
        self,
        name: str,
        health: Mapping[str, str],
        stages: Mapping[str, Any],
        share: float,
    ) -> dict[str, Any]:
        state, chain = health.get("state", "unknown"), health.get("chain", "unknown")
        track = _stats(stages, f"track.{name}")
        reason = ""
        if state == "offline":
            reason = str(_stats(stages, f"capture.{name}").get("offline_reason", ""))
        elif chain != "ok":
            reason = chain
        return {
            "name": name,
            "state": state,
            "reason": reason,
            "chain": chain,
            "frames": int(track.get("frames", 0)),
            "fps_in": self._rate(f"decode.{name}", "frames"),
            "fps_out": self._rate(f"track.{name}", "frames"),
            "width": int(track.get("frame_width", 0)),
            "height": int(track.get("frame_height", 0)),
            "frame_age_p50_s": float(track.get("frame_age_p50_s", 0.0)),
            "frame_age_p99_s": float(track.get("frame_age_p99_s", 0.0)),
            "dropped": _dropped(stages, name),
            "detector_share": round(share, 4),
            "rules": [{"name": r, "kind": k} for r, k in self.rules[name]],
        }

    def _rate(self, stage: str, counter: str) -> float:
        with self._lock:
            if len(self._history) < 2:
                return 0.0
            (t0, first), (t1, last) = self._history[0], self._history[-1]
        done = _stats(last["stages"], stage).get(counter, 0) - _stats(
            first["stages"], stage
        ).get(counter, 0)
        return round(max(0, done) / (t1 - t0), 2) if t1 > t0 else 0.0

    def _unknown(self, name: str) -> dict[str, Any]:
        unknown = {"state": "unknown", "chain": "unknown"}
        return {
            **self._camera(name, unknown, {}, 0.0),
            "reason": "the chain's supervisor is not running",
            "fps_in": 0.0,
            "fps_out": 0.0,
        }


def _stats(stages: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    stage = stages.get(name)
    stats = stage.get("stats") if isinstance(stage, Mapping) else None
    return stats if isinstance(stats, Mapping) else {}


def _dropped(stages: Mapping[str, Any], camera: str) -> dict[str, int]:
    decode = _stats(stages, f"decode.{camera}")
    capture = _stats(stages, f"capture.{camera}")
    return {
        "behind": int(decode.get("frames_dropped_behind", 0)),
        "after_gap": int(decode.get("frames_dropped_gap", 0)),
        "capture_queue": int(capture.get("queue_overflows", 0)),
    }
