"""What sink stages report in their heartbeats."""

from __future__ import annotations

import msgspec


class SinkStats(msgspec.Struct, kw_only=True):
    events: int = 0  # received


class ForwardingSinkStats(SinkStats, kw_only=True):
    delivered: int = 0
    spooled: int = 0  # waiting in the disk spool
    reachable: bool = True


class WebhookSinkStats(ForwardingSinkStats, kw_only=True):
    requests: int = 0
    rejected: int = 0
