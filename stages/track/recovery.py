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
import pickle
from dataclasses import dataclass
from typing import Any

from pipeline.checkpoint import Checkpoint, CheckpointFile

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


# What a checkpoint holds of each of the track stage's objects: everything the
# events after a frame depend on, and nothing that is rebuilt from the config.
STATE: dict[str, tuple[str, ...]] = {
    # the tracker and its id counters
    "tracking": (
        "next_seq",
        "epoch",
        "_tracker",
        "_tracker_fps",
        "_id_offset",
        "_max_track_id",
        "counters",
    ),
    # rule states, per-track confidence and votes, totals and the aggregate
    "engine": (
        "rules",
        "states",
        "names",
        "labels",
        "aggregate",
        "totals",
        "counts",
        "tracks",
    ),
    "stage": ("_names", "_last_frame", "_done", "counters"),
    # which tracks have a snapshot, and under which name
    "snapshots": ("snapshot_state",),
}


def dump_state(objects: dict[str, Any]) -> bytes:
    """The objects' state as checkpoint bytes (numpy arrays travel as buffers)."""
    parts = {
        key: tuple(getattr(objects[key], name) for name in names)
        for key, names in STATE.items()
    }
    return pickle.dumps(parts, protocol=pickle.HIGHEST_PROTOCOL)


def load_state(data: bytes) -> dict[str, Any]:
    loaded: dict[str, Any] = pickle.loads(data)  # noqa: S301  our own state folder
    return loaded


def apply_state(objects: dict[str, Any], parts: dict[str, Any]) -> None:
    """Put ``load_state``'s parts back into the objects (the current config's
    rules are put back over them by the caller)."""
    for key, names in STATE.items():
        for name, value in zip(names, parts[key], strict=True):
            setattr(objects[key], name, value)
