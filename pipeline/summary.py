"""What ``framechain run`` shows a person: a progress bar while files play and a
summary at the end, both built from the stages' heartbeat statistics."""

from __future__ import annotations

import time
from typing import IO, Any

from pipeline.supervisor import Supervisor


class Progress:
    """A tqdm bar over frames tracked, out of the files' frame counts when known."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None
        self.started = time.monotonic()

    def update(self, supervisor: Supervisor) -> None:
        if not self.enabled:
            return
        done = sum(
            int(c.stats.get("next_seq", 0))
            for n, c in supervisor.children.items()
            if n.startswith("track.")
        )
        totals = [
            int(c.stats.get("total_frames", -1))
            for n, c in supervisor.children.items()
            if n.startswith("capture.")
        ]
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


def print_summary(loaded: Any, supervisor: Supervisor, file: IO[str]) -> None:
    """Per camera: frames, fps, frame age; per rule/class/direction: counts."""
    lines = ["", "framechain summary"]
    for camera in loaded.config.cameras:
        stats = supervisor.children[f"track.{camera}"].stats
        lines.append(
            f"  camera {camera}: {stats.get('frames', 0)} frames at "
            f"{stats.get('fps', 0.0):.1f} fps, frame age p50 "
            f"{1000 * stats.get('frame_age_p50_s', 0.0):.0f} ms, p99 "
            f"{1000 * stats.get('frame_age_p99_s', 0.0):.0f} ms"
        )
        decode = supervisor.children[f"decode.{camera}"].stats
        capture = supervisor.children[f"capture.{camera}"].stats
        dropped = decode.get("frames_dropped_behind", 0) + decode.get(
            "frames_dropped_gap", 0
        )
        if dropped or decode.get("decode_errors") or capture.get("reconnects"):
            lines.append(
                f"    dropped {dropped} frames (behind "
                f"{decode.get('frames_dropped_behind', 0)}, lost packets "
                f"{decode.get('frames_dropped_gap', 0)}), decode errors "
                f"{decode.get('decode_errors', 0)}, "
                f"reconnects {capture.get('reconnects', 0)}"
            )
        counts = stats.get("counts", {})
        for key in sorted(counts):
            rule, *what = key.split("/")  # rule/class/direction or rule/event kind
            label = " ".join(what)
            lines.append(f"    {rule:<16} {label:<17} {counts[key]:>6}")
        if not counts:
            lines.append("    no line crossings")
    detect = supervisor.children["detect"].stats
    if detect:
        gated = detect.get("frames_gated", 0)
        lines.append(
            f"  detect: {detect.get('frames', 0)} frames inferred"
            + (f", {gated} skipped by the motion gate" if gated else "")
            + f", mean batch {detect.get('mean_batch', 0):.2f}, "
            f"{detect.get('infer_ms_per_frame', 0):.1f} ms inference per frame"
        )
    for sink in loaded.config.sinks:
        stats = supervisor.children[f"sink.{sink.name}"].stats
        line = f"  sink {sink.name}: {stats.get('events', 0)} events -> {sink.target()}"
        if stats.get("spooled"):
            line += f" ({stats['spooled']} not yet delivered, kept in the spool)"
        lines.append(line)
    cpu = ", ".join(
        f"{name} {child.stats.get('cpu_s', 0):.1f}s"
        for name, child in supervisor.children.items()
    )
    lines.append(f"  cpu time: {cpu}")
    if supervisor.restart_count:
        lines.append(f"  stage restarts: {supervisor.restart_count}")
    print("\n".join(lines), file=file)
