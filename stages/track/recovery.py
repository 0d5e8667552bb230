"""How the track stage survives its own death: what its checkpoint holds, and
whether a checkpoint found at start is resumed from.

A track process restarted within a run resumes its checkpoint exactly: decode still
holds every frame after it. A later run (after a crash or a power cut) resumes a
file source's checkpoint too, when the stream had not ended and the settings it
depends on are the same: decode numbers the file's frames the same in every run,
so the events after the checkpoint come out identical and are stored once. A live
source starts afresh in a new run (its frames in flight are gone with the camera's
moment), and so does a stream that had ended. In every case the events the
checkpoint still held for the sinks are delivered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import msgspec

from pipeline.checkpoint import Checkpoint, CheckpointFile
from pipeline.messages import Frame
from pipeline.state import decode
from stages.track.engine import EngineState
from stages.track.taps import TapsState
from stages.track.tracking import TrackingState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recovery:
    """Where a camera's track stage checkpoints, and what it delivers to."""

    sinks: tuple[str, ...] = ("sink",)
    checkpoint: CheckpointFile | None = None  # None: nothing survives the process
    fingerprint: str = ""
    run_id: str = ""
    # False: the sinks do not answer (a replay, a test): nothing is kept for them
    acknowledged: bool = False


def resumable(recovery: Recovery, found: Checkpoint, stream_id: str) -> bool:
    """Whether to resume from ``found`` (else only its undelivered events go on)."""
    header = found.header
    assert recovery.checkpoint is not None  # ``found`` was read from it
    if header.state_format != STATE_FORMAT:
        log.warning(
            "%s: the checkpoint %s holds state of format %d, this framechain "
            "reads format %d: starting the stream over (its undelivered events "
            "are still delivered)",
            stream_id,
            recovery.checkpoint.path,
            header.state_format,
            STATE_FORMAT,
        )
        return False
    if header.fingerprint != recovery.fingerprint:
        log.warning(
            "%s: the checkpoint was made with other source, decode or detector "
            "settings: starting the stream over",
            stream_id,
        )
        return False
    if header.run_id == recovery.run_id and recovery.run_id:
        return True  # restarted within this run
    if header.ended or header.epoch != 0:
        return False  # an earlier run that ended, or a live source
    log.info("%s: resuming an interrupted run after frame %d", stream_id, header.seq)
    return True


STATE_FORMAT = 1
"""The format of ``TrackState``. 0 was a pickle of the stage's attributes, as
framechain wrote it before its state was explicit (2898473 and earlier); bump
this when a struct below changes in a way an older checkpoint would not decode
into, or would decode into wrongly (``tests/test_state.py`` asks for it)."""


class StageState(msgspec.Struct, frozen=True):
    """The stage's own part: the model's class names, the last frame applied
    (an interval's end and a lost track's exit are stamped with it), whether
    the stream's end was applied, and its counters."""

    names: tuple[str, ...]
    last_frame: Frame | None
    done: bool
    counters: dict[str, int]


class TrackState(msgspec.Struct, frozen=True):
    """A track stage's checkpointed state: everything the events after a frame
    depend on, and nothing that is rebuilt from the config."""

    tracking: TrackingState
    engine: EngineState
    taps: TapsState
    stage: StageState


def decode_state(data: bytes) -> TrackState:
    """
    Raises:
        StateError: ``data`` is not a ``TrackState`` of this format.
    """
    return decode(data, TrackState)
