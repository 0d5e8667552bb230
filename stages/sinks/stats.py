"""What sink stages report in their heartbeats."""

from __future__ import annotations

import msgspec


class SinkStats(msgspec.Struct, kw_only=True):
    events: int = 0  # received
    undecodable: int = 0  # arrived, could not be decoded, not stored


class SqliteSinkStats(SinkStats, kw_only=True):
    pruned_events: int = 0  # deleted by retention
    held: int = 0  # in memory, waiting for room on the disk
    problem: str = ""


class ForwardingSinkStats(SinkStats, kw_only=True):
    delivered: int = 0
    spooled: int = 0  # waiting in the disk spool
    reachable: bool = True
    spool_pruned: int = 0  # undelivered events dropped by spool_max_mb


class WebhookSinkStats(ForwardingSinkStats, kw_only=True):
    requests: int = 0
    rejected: int = 0
