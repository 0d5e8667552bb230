"""Capture from live sources (RTSP, HTTP/MJPEG/HLS, USB) that survives the real world.

A connection thread opens the source, reads packets into a bounded queue and, when the
source fails, waits out a capped, jittered exponential backoff before the next attempt.
Reads have deadlines, so a stalled server counts as a failure. The stage
itself never blocks: it drains the queue, sends packets without waiting (a full
downstream queue drops the packet and counts it; decode then resumes at the next
keyframe) and reports ``online``/``offline`` transitions in-band, with a reason, so
they become events like any other.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any, Literal

from pydantic import Field

from pipeline.backoff import Backoff
from pipeline.clock import Clock, WallClock
from pipeline.configtypes import EnvSecret, StrictModel, url_of
from pipeline.log import redact
from pipeline.messages import EndOfStream, Packet, StreamStatus
from pipeline.stage import Doorbell, Emit, Received, Stage
from stages.capture.sources import (
    AvReader,
    MjpegReader,
    RawPacket,
    SourceFailure,
    StreamInfo,
    UsbReader,
)
from stages.capture.stats import LiveCaptureStats

log = logging.getLogger(__name__)


class BackoffConfig(StrictModel):
    initial_s: float = Field(
        default=1.0, ge=1.0, le=60, description="First retry delay."
    )
    factor: float = Field(default=2.0, ge=1.0, le=10, description="Delay multiplier.")
    max_s: float = Field(default=30.0, ge=1.0, le=3600, description="Delay cap.")
    jitter: float = Field(
        default=0.2, ge=0, le=0.5, description="± fraction of jitter."
    )
    reset_after_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="Frames delivered this long make the camera healthy: after it "
        "drops, delays start over.",
    )
    outage_cap_s: float = Field(
        default=5.0,
        ge=1.0,
        le=3600,
        description="Longest delay early in a healthy camera's outage.",
    )
    outage_fast_s: float = Field(
        default=60.0,
        ge=0,
        le=86400,
        description="How long into such an outage the cap holds.",
    )


class _LiveSource(StrictModel):
    open_timeout_s: float = Field(
        default=10.0, gt=0, le=120, description="Deadline to connect."
    )
    stall_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="No data this long counts as a stall.",
    )
    backoff: BackoffConfig = Field(
        default_factory=BackoffConfig, description="Reconnect pacing."
    )


class RtspSourceConfig(_LiveSource):
    kind: Literal["rtsp"] = Field(description="An RTSP camera, through PyAV/FFmpeg.")
    url: Annotated[EnvSecret, url_of("rtsp", "rtsps")] = Field(
        description="rtsp:// URL; put credentials in ${ENV} only."
    )
    transport: Literal["tcp", "udp"] = Field(
        default="tcp", description="RTP transport."
    )


class HttpSourceConfig(_LiveSource):
    kind: Literal["http"] = Field(
        description="An HTTP(S) stream: MJPEG, HLS, progressive."
    )
    url: Annotated[EnvSecret, url_of("http", "https")] = Field(
        description="http(s):// URL; credentials in ${ENV} only."
    )
    format: Literal["stream", "mjpeg"] = Field(
        default="stream",
        description="mjpeg: multipart/x-mixed-replace JPEGs; stream: what FFmpeg reads",
    )


class UsbSourceConfig(_LiveSource):
    kind: Literal["usb"] = Field(description="A USB/V4L2 camera through OpenCV.")
    device: int | str = Field(description="Device index or path, e.g. /dev/video0.")
    pixel_format: str | None = Field(
        default=None,
        min_length=4,
        max_length=4,
        description="FOURCC to request, e.g. MJPG or YUYV.",
    )
    width: int | None = Field(
        default=None, gt=0, le=16384, description="Requested width."
    )
    height: int | None = Field(
        default=None, gt=0, le=16384, description="Requested height."
    )
    fps: float | None = Field(
        default=None, gt=0, le=1000, description="Requested frame rate."
    )


_QUEUE_ITEMS = 256


def make_reader(source: RtspSourceConfig | HttpSourceConfig | UsbSourceConfig) -> Any:
    if isinstance(source, UsbSourceConfig):
        return UsbReader(
            source.device, source.pixel_format, source.width, source.height, source.fps
        )
    url = source.url.get_secret_value()
    if isinstance(source, HttpSourceConfig) and source.format == "mjpeg":
        return MjpegReader(url, source.open_timeout_s, source.stall_timeout_s)
    transport = source.transport if isinstance(source, RtspSourceConfig) else None
    # FFmpeg gives up after two read deadlines (measured: a 3 s deadline ends a
    # stalled RTSP read after 6 s), so half the stall time makes the stall time true.
    # HTTP streams (HLS, progressive files) can arrive faster than real time: pace them
    # like the camera they stand for, instead of dropping what the chain cannot take.
    return AvReader(
        url,
        source.open_timeout_s,
        source.stall_timeout_s / 2,
        transport,
        pace=transport is None,
    )


class Connection(threading.Thread):
    """Keeps one source connected: open, read, fail, back off, repeat, until stopped.

    Puts ``("online", StreamInfo)``, ``("packet", RawPacket)`` and
    ``("offline", SourceFailure)`` items on ``items``; records each attempt's time.
    """

    def __init__(
        self,
        name: str,
        make: Callable[[], Any],
        backoff: Backoff,
        items: queue.Queue[tuple[str, Any]],
        doorbell: Doorbell,
    ) -> None:
        super().__init__(name=f"connection-{name}", daemon=True)
        self.make = make
        self.backoff = backoff
        self.items = items
        self.doorbell = doorbell
        self.stopping = threading.Event()
        self.attempts: deque[float] = deque(maxlen=20)  # wall times, the latest
        self.attempt_count = 0
        self.overflows = 0

    def run(self) -> None:
        while not self.stopping.is_set():
            self.attempts.append(time.time())
            self.attempt_count += 1
            reader = self.make()
            try:
                info: StreamInfo = reader.open()
                self._put(("online", info))
                for raw in reader.packets():
                    if self.stopping.is_set():
                        return
                    self.backoff.delivering(time.monotonic())
                    try:
                        self.items.put_nowait(("packet", raw))
                        self.doorbell.ring()
                    except queue.Full:
                        self.overflows += 1
            except SourceFailure as failure:
                self._put(("offline", failure))
            except Exception as e:  # a reader bug must not kill reconnection
                log.exception("source reader failed")
                self._put(("offline", SourceFailure("error", redact(str(e)))))
            finally:
                reader.close()
            self.stopping.wait(self.backoff.next_delay(time.monotonic()))

    def _put(self, item: tuple[str, Any]) -> None:
        self.items.put(item)
        self.doorbell.ring()


class LiveCaptureStage(Stage):
    """Emits ``Packet``s of a live source and ``StreamStatus`` on every change."""

    def __init__(
        self,
        stream_id: str,
        source: Any,
        clock: Clock | None = None,
        record: bool = False,
    ) -> None:
        """``record``: each packet also goes to the recorder (``record`` port)."""
        self.stream_id = stream_id
        self.record = record
        self.source = source
        self.clock = clock or WallClock()
        self._items: queue.Queue[tuple[str, Any]] = queue.Queue(_QUEUE_ITEMS)
        self._doorbell = Doorbell()
        self._connection: Connection | None = None
        self._info: StreamInfo | None = None
        self._state = "starting"
        self._reason = ""  # why it is offline
        self._seq = 0
        self._done = False
        self.counters: dict[str, int] = defaultdict(int)
        self.failures: dict[str, int] = defaultdict(int)  # by reason

    def setup(self) -> None:
        cfg = self.source.backoff
        backoff = Backoff(
            cfg.initial_s,
            cfg.factor,
            cfg.max_s,
            cfg.jitter,
            cfg.reset_after_s,
            cfg.outage_cap_s,
            cfg.outage_fast_s,
        )
        self._connection = Connection(
            self.stream_id,
            lambda: make_reader(self.source),
            backoff,
            self._items,
            self._doorbell,
        )
        self._connection.start()

    def wake_fd(self) -> int | None:
        return self._doorbell.fileno()  # rung by the connection thread per item

    def produce(self) -> Iterable[Emit]:
        emits: list[Emit] = []
        while len(emits) < 32 and not self._done:
            try:
                what, item = self._items.get_nowait()
            except queue.Empty:
                break
            if what == "packet":
                packet = self._packet(item)
                emits.append(packet)
                if self.record:
                    emits.append(Emit("record", packet.message, packet.parts))
            elif what == "online":
                self._info = item
                emits += self._status("online", "connected", "")
            else:
                self.failures[item.reason] += 1
                emits += self._status("offline", item.reason, str(item))
        return emits

    def _packet(self, raw: RawPacket) -> Emit:
        info = self._info
        assert info is not None
        message = Packet(
            stream_id=self.stream_id,
            seq=self._seq,
            capture_ts=self.clock.now(),
            pts=raw.pts,
            keyframe=raw.keyframe,
            codec=info.codec,
            width=info.width,
            height=info.height,
            fps=info.fps,
            total_frames=-1,
            extradata=info.extradata if raw.keyframe else None,
            live=True,
            dts=raw.dts,
        )
        self._seq += 1
        self.counters["packets"] += 1
        return Emit("packets", message, (raw.payload,))

    def _status(
        self, state: Literal["online", "offline"], reason: str, detail: str
    ) -> list[Emit]:
        """A change of state, or of the reason a camera is offline (a server
        that is back but now refuses the password), is an event; the same again
        is only a log line."""
        if state == self._state and (state == "online" or reason == self._reason):
            log.info("%s still %s (%s): %s", self.stream_id, state, reason, detail)
            return []
        self._state, self._reason = state, reason
        if state == "online":
            self.counters[
                "reconnects" if self.counters["connects"] else "connects"
            ] += 1
            log.info("%s online", self.stream_id)
        else:
            log.warning("%s offline (%s): %s", self.stream_id, reason, detail)
        message = StreamStatus(
            self.stream_id,
            self._seq,
            state,
            reason,
            self.clock.now(),
            redact(detail)[:300],
        )
        self._seq += 1
        return [Emit("packets", message)]

    def process(self, batch: Sequence[Received]) -> Iterable[Emit]:
        return ()

    def stop(self) -> Iterable[Emit]:
        if self._connection is not None:
            self._connection.stopping.set()
        self._done = True
        return (
            Emit(
                "packets", EndOfStream(self.stream_id, self._seq, "stopped", self._seq)
            ),
        )

    def finished(self) -> bool:
        return self._done

    def stats(self) -> LiveCaptureStats:
        connection = self._connection
        return LiveCaptureStats(
            packets=self.counters["packets"],
            connects=self.counters["connects"],
            reconnects=self.counters["reconnects"],
            reconnect_attempts=max(0, connection.attempt_count - 1)
            if connection
            else 0,
            offline_reason=self._reason if self._state == "offline" else "",
            failures=dict(self.failures),
            state=self._state,
            attempts=list(connection.attempts) if connection else [],
            queue_overflows=connection.overflows if connection else 0,
        )

    def close(self) -> None:
        if self._connection is not None:
            self._connection.stopping.set()
