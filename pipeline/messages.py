"""Every message the stages exchange, in one place.

A message travels as ZeroMQ multipart: frame 0 is the msgpack-encoded header (one of the
structs below, tagged by type), frames 1.. are binary parts (packet bytes, pixels,
detection columns) sent without copying. Headers are small and validated on receipt;
nothing is ever pickled.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from pipeline.errors import MessageError
from pipeline.eventkinds import KIND_PATTERN


class Timing(msgspec.Struct, frozen=True, array_like=True):
    """Wall-clock seconds (``time.time()``) at which ``stage`` started and finished
    with a message; used for per-stage latency and frame age."""

    stage: str
    start: float
    end: float


class FrameRef(msgspec.Struct, frozen=True, array_like=True):
    """Where a frame's pixels sit in the producer's shared-memory ring. ``generation``
    is the slot's sequence-lock value when written; a reader seeing another value knows
    the slot was reused and must not use the pixels."""

    segment: str
    slot: int
    generation: int


class Packet(msgspec.Struct, frozen=True, array_like=True, tag="packet"):
    """One compressed packet from capture to decode; part 0 holds the packet bytes.

    ``extradata`` (codec parameters, e.g. H.264 SPS/PPS) rides on keyframes so that a
    restarted decoder can start at any keyframe.
    """

    stream_id: str
    seq: int
    capture_ts: float
    pts: float | None
    keyframe: bool
    codec: str
    width: int
    height: int
    fps: float
    total_frames: int
    extradata: bytes | None = None
    live: bool = False
    dts: float | None = None  # decode time, seconds (None: the demuxer gave none)


class Frame(msgspec.Struct, frozen=True, array_like=True, tag="frame"):
    """One decoded BGR frame (uint8, height × width × 3, or ``pixel_size``).

    Pixels are in shared memory when ``shm`` is set, else inline in part 0 (tcp links).
    ``seq`` numbers the frames of one stream without gaps; downstream stages check it.
    ``motion`` false: the camera's motion gate found nothing new in this frame, so
    detect may reuse the camera's last detections instead of running the model.
    ``epoch`` names the sequence ``seq`` belongs to: 0 for a file source (the same
    file always gives the same numbers), the decode process's start time in
    milliseconds for a live source (each decode process numbers from 0 again).
    ``pixel_size`` (width, height), when set: decode scaled the pixels to the size
    the detector letterboxes them to, because nothing else reads them; ``width`` and
    ``height`` stay the camera's frame size, the space detections and rules are in.
    """

    stream_id: str
    seq: int
    capture_ts: float
    pts: float
    width: int
    height: int
    fps: float
    shm: FrameRef | None
    timings: tuple[Timing, ...] = ()
    motion: bool = True
    epoch: int = 0
    pixel_size: tuple[int, int] | None = None

    @property
    def pixel_shape(self) -> tuple[int, int, int]:
        """The (height, width, 3) of the pixels this message carries or points to."""
        width, height = self.pixel_size or (self.width, self.height)
        return height, width, 3


class OverlayLine(msgspec.Struct, frozen=True, array_like=True):
    """A counting line as annotation draws it, with its running totals."""

    name: str
    start: tuple[float, float]
    end: tuple[float, float]
    count_in: int
    count_out: int


class OverlayZone(msgspec.Struct, frozen=True, array_like=True):
    """A zone or crowd area as annotation draws it, with what it counts now."""

    name: str
    polygon: tuple[tuple[float, float], ...]
    count: int
    crowd: bool = False


class Overlay(msgspec.Struct, frozen=True, omit_defaults=True):
    """What annotation draws besides boxes: the rules' geometry and counts. Encoded
    as a map (not an array like the other structs): recordings made before it was
    typed hold an empty map here, and still replay."""

    lines: tuple[OverlayLine, ...] = ()
    zones: tuple[OverlayZone, ...] = ()


class Detected(msgspec.Struct, frozen=True, array_like=True, tag="detected"):
    """A frame with its detections. When ``count`` > 0, parts 0..2 hold the columns
    ``xyxy`` (count×4 float32, source pixels), ``confidence`` (float32) and
    ``class_id`` (int32), and part 3 ``tracker_id`` (int64) when ``tracked``. When
    ``masks`` is set (segmentation models), the next two parts hold the instance
    masks inside their boxes (``pipeline.masks.BoxMasks``). When ``labels`` (the crop
    classifier's label names) is not empty, the next two parts hold each
    detection's label id (int32, -1: not classified) and its score (float32). When
    ``pixels`` is set,
    the last part holds the frame's BGR pixels (tcp links, and the track → annotate
    link, where the shared-memory slot may be reused before use).
    ``overlay`` carries what annotation draws besides boxes: rule geometry and
    counts."""

    frame: Frame
    count: int
    names: tuple[str, ...] = ()
    timings: tuple[Timing, ...] = ()
    tracked: bool = False
    pixels: bool = False
    overlay: Overlay | None = None
    masks: bool = False
    labels: tuple[str, ...] = ()


class EndOfStream(msgspec.Struct, frozen=True, array_like=True, tag="eos"):
    """No more frames for ``stream_id``. ``seq`` is the sequence slot it occupies, so
    that it is acknowledged and re-sent like a frame."""

    stream_id: str
    seq: int
    reason: str
    frames: int
    epoch: int = 0


class StreamStatus(msgspec.Struct, frozen=True, array_like=True, tag="status"):
    """A live source went ``online`` or ``offline`` (with ``reason``: refused, timeout,
    stalled, auth_failed, eof, error, connected). Travels in-band, in sequence with the
    frames, so events and frames stay in order."""

    stream_id: str
    seq: int
    state: Literal["online", "offline"]
    reason: str
    ts: float
    detail: str = ""
    epoch: int = 0


class Ack(msgspec.Struct, frozen=True, array_like=True, tag="ack"):
    """Cumulative acknowledgement: every frame of ``stream_id`` (in ``epoch``) up to
    ``seq`` is done: tracked, rules applied, and the track stage's state after it,
    with the events not yet stored by every sink, checkpointed to disk."""

    stream_id: str
    seq: int
    epoch: int = 0


class Resume(msgspec.Struct, frozen=True, array_like=True, tag="resume"):
    """Track to decode: the next frame it needs is ``seq`` of ``epoch``. Sent when a
    track stage starts (restored from its checkpoint), when a frame arrives ahead of
    a gap, and every second while no frame comes; decode sends its frames from
    there (a restarted file decode skips the frames before it)."""

    stream_id: str
    epoch: int
    seq: int


class Mark(msgspec.Struct, frozen=True, array_like=True, tag="mark"):
    """Track to each sink, after the events of a batch of frames: a sink answers with
    ``Stored`` once everything it received before the mark is durable. ``origin``
    names the track process (a restarted one starts counting ``token`` again)."""

    stream_id: str
    origin: int
    token: int


class Stored(msgspec.Struct, frozen=True, array_like=True, tag="stored"):
    """Sink to track: everything before mark ``token`` is durably stored. ``session``
    names the sink process: a new one may have lost what its predecessor had
    received and not stored, so the track sends it every event not yet stored."""

    sink: str
    session: int
    stream_id: str
    origin: int
    token: int


class Event(msgspec.Struct, frozen=True, array_like=True, tag="event"):
    """An analytics event. This struct is the one definition of an event: the
    SQLite columns and ``docs/event.schema.json`` are generated from it and from
    the registered event kinds (``pipeline.eventschema``, ``pipeline.eventkinds``).
    ``kind`` is any registered kind's name: a sink stores and publishes a kind it
    has never heard of like any other. ``event_id`` is stable (camera, rule, kind,
    track, frame seq), so a redelivered event is stored once."""

    event_id: Annotated[
        str,
        msgspec.Meta(
            description="<camera>:<rule>:<kind>:<track_id>:<seq> for a file "
            "source (the same in every run), "
            "<camera>:<rule>:<kind>:<track_id>:<epoch>-<seq> for a live one (unique "
            "per run); the same frame and rule always give the same id.",
            pattern=r"^[^:]+:[^:]+:[a-z][a-z0-9_]*:-?[0-9]+:([0-9]+-)?[0-9]+$",
        ),
    ]
    stream_id: Annotated[
        str,
        msgspec.Meta(description="Camera name from the config."),
    ]
    rule: Annotated[
        str,
        msgspec.Meta(
            description="Rule name; 'camera' for camera status events, "
            "'aggregate' for counts."
        ),
    ]
    kind: Annotated[
        str,
        msgspec.Meta(
            description="What happened: a registered event kind (see docs/events.md).",
            pattern=KIND_PATTERN,
        ),
    ]
    seq: Annotated[
        int,
        msgspec.Meta(
            description="Frame sequence number in the camera's stream where the "
            "event was decided.",
            ge=0,
        ),
    ]
    pts: Annotated[
        float,
        msgspec.Meta(description="That frame's presentation time, seconds."),
    ]
    capture_ts: Annotated[
        float,
        msgspec.Meta(
            description="Wall-clock time (Unix seconds) the frame was captured."
        ),
    ]
    track_id: Annotated[
        int,
        msgspec.Meta(
            description="Track id; -1 for events without a track.",
            ge=-1,
        ),
    ] = -1
    class_id: Annotated[
        int,
        msgspec.Meta(
            description="Class id in the model; -1 without one.",
            ge=-1,
        ),
    ] = -1
    class_name: Annotated[
        str,
        msgspec.Meta(description="Class name in the model; '' without one."),
    ] = ""
    direction: Annotated[
        str,
        msgspec.Meta(
            description="'in' / 'out' for line_crossing; the reason for camera_* "
            "events; what the kind says, '' when it uses none."
        ),
    ] = ""
    value: Annotated[
        float,
        msgspec.Meta(
            description="The kind's number (each kind below says what it is); 0 "
            "when it has none."
        ),
    ] = 0.0
    data: Annotated[
        dict[str, Any],
        msgspec.Meta(
            description="The kind's details (its struct, below); events of a "
            "track with a crop classifier's label also hold 'label'."
        ),
    ] = {}
    confidence: Annotated[
        float,
        msgspec.Meta(
            description="The track's mean detection confidence; 0 without a track.",
            ge=0,
            le=1,
        ),
    ] = 0.0
    low_confidence: Annotated[
        bool,
        msgspec.Meta(
            description="confidence is below the rule's low_confidence_below."
        ),
    ] = False
    snapshot: Annotated[
        str,
        msgspec.Meta(
            description="Path of the track's best crop (JPEG) when snapshots are "
            "on, else ''."
        ),
    ] = ""
    snapshot_url: Annotated[
        str,
        msgspec.Meta(
            description="The snapshot on the HTTP API (http.public_url) when "
            "snapshots and the API are on, else ''."
        ),
    ] = ""
    clip_url: Annotated[
        str,
        msgspec.Meta(
            description="The event's clip on the HTTP API when the camera has "
            "clips and the API is on, else ''; it answers 404 with Retry-After "
            "until the post-roll is recorded."
        ),
    ] = ""


class Heartbeat(msgspec.Struct, frozen=True, array_like=True, tag="heartbeat"):
    """Sent by every stage to the supervisor's control socket; any message counts as
    a sign of life. ``stats`` are the stage's counters (frames, drops, counts...)."""

    stage: str
    pid: int
    ts: float
    state: str
    stats: dict[str, Any] = {}


Message = (
    Packet
    | Frame
    | Detected
    | EndOfStream
    | StreamStatus
    | Ack
    | Resume
    | Mark
    | Stored
    | Event
    | Heartbeat
)

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(Message)


def encode(message: Message) -> bytes:
    """Serialise a header to msgpack bytes."""
    return _ENCODER.encode(message)


def decode(data: bytes | memoryview) -> Message:
    """Parse and validate a header.

    Raises:
        MessageError: the bytes are not a valid framechain header.
    """
    try:
        return _DECODER.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise MessageError(f"invalid message header: {e}") from e


def event_id(
    stream_id: str, rule: str, kind: str, track_id: int, seq: int, epoch: int = 0
) -> str:
    """The id of an event: the same frame and rule always give the same id. A file
    source's frames are numbered the same in every run (epoch 0), so its ids are
    stable across runs; a live source's carry the epoch of their decode process,
    so no restart reuses an earlier run's id."""
    if epoch:
        return f"{stream_id}:{rule}:{kind}:{track_id}:{epoch}-{seq}"
    return f"{stream_id}:{rule}:{kind}:{track_id}:{seq}"
