"""What network sinks (MQTT, webhook) share: spool every event to disk first, then
deliver from the spool, in order, with capped, jittered backoff while the far end
is away. The sink finishes only when its streams have ended and its spool is
empty, so a file run does not end with events undelivered; when it is stopped
while the far end is away, the spool keeps them for the next start instead."""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import Field

from pipeline.backoff import Backoff
from pipeline.clock import Clock
from pipeline.configtypes import ConfigPath, StrictModel
from pipeline.messages import Event
from pipeline.retention import Pacer
from pipeline.stage import Emit
from stages.sinks.base import EventSink
from stages.sinks.spool import DiskSpool
from stages.sinks.stats import ForwardingSinkStats

log = logging.getLogger(__name__)


class ForwardingSinkConfig(StrictModel):
    """Settings every network sink has: its name, retry pacing and spool."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$", description="Sink name, unique.")
    retry_initial_s: float = Field(
        default=1.0, ge=1, le=60, description="First retry delay (then doubled)."
    )
    retry_max_s: float = Field(
        default=30.0, ge=1, le=3600, description="Retry delay cap."
    )
    spool_dir: ConfigPath = Field(
        default="spool",
        validate_default=True,
        description="Folder of the disk spool (<name>.db) used while the far end "
        "is away.",
    )
    spool_max_mb: float | None = Field(
        default=None,
        gt=0,
        le=10**8,
        description="Cap on the spool file: beyond it the oldest undelivered events "
        "are dropped (counted and logged); unset, an outage costs disk, not events.",
    )


class ForwardingSink(EventSink):
    tick_interval = 0.2

    def __init__(
        self,
        config: ForwardingSinkConfig,
        streams: Iterable[str],
        label: str,
        clock: Clock | None = None,
    ) -> None:
        """``label`` names the far end in log lines ("MQTT broker host:1883")."""
        super().__init__(streams, clock)
        self.spool_path = Path(config.spool_dir) / f"{config.name}.db"
        self.label = label
        self.spool: DiskSpool | None = None
        self.spool_max_mb = config.spool_max_mb
        self._pacer = Pacer()
        self.spool_pruned = 0
        self.backoff = Backoff(
            initial_s=config.retry_initial_s, max_s=config.retry_max_s
        )
        self.retry_at = 0.0
        self.delivered = 0
        self.outage_since: float | None = None
        self.stopping = False

    def setup(self) -> None:
        self.spool = DiskSpool(self.spool_path, self.clock)
        if len(self.spool):
            log.info(
                "%s: %d events spooled by an earlier run will be delivered first",
                self.label,
                len(self.spool),
            )

    def write(self, events: Sequence[Event]) -> None:
        assert self.spool is not None
        self.spool.append(events)
        limit = self.spool_max_mb
        if limit is not None and self._pacer.due():
            dropped = self.spool.shrink(int(limit * 1e6))
            if dropped:
                self.spool_pruned += dropped
                log.warning(
                    "%s: spool over spool_max_mb; dropped the %d oldest undelivered "
                    "events (%d so far)",
                    self.label,
                    dropped,
                    self.spool_pruned,
                )

    def flush(self) -> None:
        """Deliver what the far end will take now, without waiting for it."""
        if self.spool is not None and self.clock.monotonic() >= self.retry_at:
            self.deliver()

    def tick(self, now: float) -> Iterable[Emit]:
        self.flush()
        return ()

    @abstractmethod
    def deliver(self) -> None:
        """Move events from the spool to the far end; call ``failed`` on trouble."""

    def failed(self, reason: str) -> None:
        """The far end is unreachable or refusing: wait before the next try."""
        delay = self.backoff.next_delay(self.clock.monotonic())
        self.retry_at = self.clock.monotonic() + delay
        assert self.spool is not None
        if self.outage_since is None:
            self.outage_since = self.clock.monotonic()
            log.warning(
                "%s unavailable (%s); events are spooled to %s and delivered when "
                "it returns",
                self.label,
                reason,
                self.spool_path,
            )
        else:
            log.debug(
                "%s still unavailable (%s); next try in %.1fs",
                self.label,
                reason,
                delay,
            )

    def succeeded(self, items: Sequence[tuple[int, Event]]) -> None:
        assert self.spool is not None
        self.spool.delivered(items)
        self.delivered += len(items)
        now = self.clock.monotonic()
        if self.outage_since is not None:
            log.info(
                "%s is back after %.0fs; %d events still spooled",
                self.label,
                now - self.outage_since,
                len(self.spool),
            )
            self.outage_since = None
        self.backoff.delivering(now)

    def stop(self) -> Iterable[Emit]:
        self.stopping = True
        return ()

    def finished(self) -> bool:
        """Streams ended and spool empty; or, when stopping, the far end away:
        retrying it until the drain deadline would only delay the stop, and the
        spool on disk delivers the rest at the next start."""
        if not self.input_ended() or self.spool is None:
            return False
        return not len(self.spool) or (self.stopping and self.outage_since is not None)

    def stats(self) -> ForwardingSinkStats:
        return ForwardingSinkStats(
            events=self.received,
            undecodable=self.undecodable,
            delivered=self.delivered,
            spooled=len(self.spool) if self.spool is not None else 0,
            reachable=self.outage_since is None,
            spool_pruned=self.spool_pruned,
        )

    def close(self) -> None:
        if self.spool is not None:
            if len(self.spool):
                log.warning(
                    "%s: %d events stay spooled in %s for the next start",
                    self.label,
                    len(self.spool),
                    self.spool_path,
                )
            self.spool.close()
