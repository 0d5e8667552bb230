"""A stage's state on disk, written whole and atomically at frame boundaries.

The track stage checkpoints after every batch of frames, before it acknowledges
them to decode: its tracker, rule states and counters after the last frame, and
the events the sinks have not all stored yet. A restarted track resumes from the
file, and decode, which holds every frame not yet acknowledged, sends the rest.

The file is one msgpack header (what the framework needs to decide whether to
resume) followed by the stage's own state, opaque here, and a CRC-32 of both. It
is written to a temporary file and renamed over the old one, so a kill at any
moment leaves either the old or the new checkpoint; a torn or foreign file is
reported and ignored (the stream then starts over, which a file source's stable
event ids make harmless). The file is synced to disk at most once per
``sync_interval_s``: an older checkpoint only replays more frames, so the sync
bounds the work a power cut repeats, not what it can lose.

The state is the stage's own snapshot, msgpack of its structs (``pipeline.state``):
data, never code. The header says its format, so a stage reading a checkpoint of
another format refuses it in one line rather than restore it wrong. The folder is
still created private (0700): it holds events not yet delivered.
"""

from __future__ import annotations

import logging
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from pipeline.clock import Clock, WallClock
from pipeline.errors import FramechainError

log = logging.getLogger(__name__)

MAGIC = b"FCCKPT1\n"
_LENGTH = 4


class CheckpointHeader(msgspec.Struct, frozen=True):
    """What decides whether a stage resumes from a checkpoint."""

    run_id: str  # the supervisor's run that wrote it
    fingerprint: str  # of the config the state depends on
    epoch: int  # of the stream's sequence (0: a file source)
    seq: int  # the last frame applied; -1 before the first
    ended: bool  # the stream's end was applied
    outbox: list[bytes] = []  # encoded messages not yet stored by every sink
    # the stage's format of ``state`` (0: written before formats were numbered)
    state_format: int = 0


@dataclass
class Checkpoint:
    header: CheckpointHeader
    state: bytes


@dataclass
class CheckpointFile:
    """One stage's checkpoint at ``path``."""

    path: Path
    sync_interval_s: float = 1.0
    clock: Clock = field(default_factory=WallClock)
    writes: int = 0
    bytes_written: int = 0
    last_size: int = 0
    _last_sync: float = float("-inf")

    def load(self) -> Checkpoint | None:
        """The checkpoint on disk, or None when there is none or it is unreadable
        (logged: the stage starts from scratch)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            log.warning("checkpoint %s unreadable (%s): starting over", self.path, e)
            return None
        body, crc = data[:-4], data[-4:]
        if (
            len(data) < len(MAGIC) + _LENGTH + 4
            or not body.startswith(MAGIC)
            or zlib.crc32(body).to_bytes(4, "big") != crc
        ):
            log.warning("checkpoint %s is torn or foreign: starting over", self.path)
            return None
        at = len(MAGIC)
        length = int.from_bytes(body[at : at + _LENGTH], "big")
        at += _LENGTH
        try:
            header = msgspec.msgpack.decode(
                body[at : at + length], type=CheckpointHeader
            )
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            log.warning("checkpoint %s unreadable (%s): starting over", self.path, e)
            return None
        return Checkpoint(header, body[at + length :])

    def save(self, header: CheckpointHeader, state: bytes) -> None:
        """Replace the checkpoint with this one, atomically.

        Raises:
            FramechainError: it cannot be written (disk full, folder not writable).
        """
        encoded = msgspec.msgpack.encode(header)
        body = b"".join((MAGIC, len(encoded).to_bytes(_LENGTH, "big"), encoded, state))
        data = body + zlib.crc32(body).to_bytes(4, "big")
        temporary = self.path.with_name(self.path.name + ".tmp")
        now = self.clock.monotonic()
        sync = now - self._last_sync >= self.sync_interval_s
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, self.path)
            if sync:  # the rename itself survives a power cut once its folder is synced
                folder = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(folder)
                finally:
                    os.close(folder)
        except OSError as e:
            raise FramechainError(
                f"cannot write checkpoint {self.path}: {e}; is the disk full or "
                "state_dir not writable?"
            ) from e
        if sync:
            self._last_sync = now
        self.writes += 1
        self.bytes_written += len(data)
        self.last_size = len(data)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
