"""What capture stages report in their heartbeats."""

from __future__ import annotations

import msgspec


class FileCaptureStats(msgspec.Struct, kw_only=True):
    packets: int = 0
    total_frames: int = -1  # -1: unknown (a live source)
    read_errors: int = 0  # demux errors in a damaged file
    problem: str = ""  # a damaged file, for the line at the end of the run


class LiveCaptureStats(FileCaptureStats, kw_only=True):
    state: str = "starting"  # online, offline (with the reason), stopped
    connects: int = 0
    reconnects: int = 0  # connections made again after one was lost
    reconnect_attempts: int = 0  # every try after the first, failed or not
    offline_reason: str = ""  # refused, dns, timeout, auth_failed, stalled, eof ...
    failures: dict[str, int] = {}  # by reason: refused, timeout, auth_failed ...
    attempts: list[float] = []  # wall times of the last connection attempts
    queue_overflows: int = 0
