"""Shared-memory frame rings with a generation check (seqlock).

A producer owns a ring of fixed-size slots in one memory-mapped file under /dev/shm.
Each slot starts with a 16-byte header: the generation (odd while being written) and
the payload size. A message carries ``FrameRef(segment, slot, generation)``; a reader
checks the generation before handing out a view and again after it finished, so a slot
overwritten in between is detected and counted, never misread. The owner alone creates
and unlinks the file; readers only map it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import mmap
import os
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.errors import SlotOverwrittenError
from pipeline.messages import FrameRef

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<QQ")  # generation, payload bytes
_ALIGN = 64


def shm_directory() -> Path:
    """Where ring files live: /dev/shm when the OS has it (Linux), else the temp dir."""
    path = Path("/dev/shm")
    return path if path.is_dir() else Path(os.environ.get("TMPDIR", "/tmp"))


def _slot_stride(payload_bytes: int) -> int:
    size = _HEADER.size + payload_bytes
    return (size + _ALIGN - 1) // _ALIGN * _ALIGN


class FrameRing:
    """A ring of ``slots`` slots of ``payload_bytes`` each, owned by one producer.
    Every frame written to one ring has exactly ``payload_bytes`` bytes.

    The producer must not reuse a slot whose frame is still in flight; framechain's
    decode stage guarantees that with its acknowledgement window, and the generation
    check catches any case where that guarantee breaks.
    """

    def __init__(self, name: str, payload_bytes: int, slots: int) -> None:
        if slots < 1 or payload_bytes < 1:
            raise ValueError("a ring needs at least one slot of at least one byte")
        self.name = name
        self.payload_bytes = payload_bytes
        self.slots = slots
        self._stride = _slot_stride(payload_bytes)
        self._path = shm_directory() / name
        fd = os.open(self._path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, self._stride * slots)
            self._map = mmap.mmap(fd, self._stride * slots)
        finally:
            os.close(fd)
        self._next_slot = 0
        self._generation = 0

    def write(self, pixels: np.ndarray) -> FrameRef:
        """Copy ``pixels`` into the next slot and return its reference."""
        data = np.ascontiguousarray(pixels)
        nbytes = data.nbytes
        if nbytes > self.payload_bytes:
            raise ValueError(
                f"frame of {nbytes} bytes exceeds slot of {self.payload_bytes}"
            )
        slot = self._next_slot
        self._next_slot = (slot + 1) % self.slots
        self._generation += 2
        offset = slot * self._stride
        _HEADER.pack_into(
            self._map, offset, self._generation - 1, nbytes
        )  # odd: writing
        start = offset + _HEADER.size
        np.frombuffer(self._map, np.uint8, nbytes, start)[:] = data.reshape(-1).view(
            np.uint8
        )
        _HEADER.pack_into(self._map, offset, self._generation, nbytes)
        return FrameRef(segment=self.name, slot=slot, generation=self._generation)

    def close(self) -> None:
        """Unmap and unlink the ring; readers still mapping it keep their mapping."""
        self._map.close()
        self._path.unlink(missing_ok=True)


class StreamRings:
    """The rings of one producer process for one stream, a new one whenever the
    frame size changes. Named ``<stem>.<pid>.<n>``: frames of a killed predecessor
    still in flight keep pointing at its rings, never at a reused slot of ours,
    and the predecessor's rings are removed as we start."""

    def __init__(self, stem: str, slots: int) -> None:
        self.stem = stem
        self.slots = slots
        self.rings: list[FrameRing] = []
        remove_rings(f"{stem}.")

    def ring_for(self, nbytes: int) -> FrameRing:
        if not self.rings or self.rings[-1].payload_bytes != nbytes:
            name = f"{self.stem}.{os.getpid()}.{len(self.rings)}"
            self.rings.append(FrameRing(name, nbytes, self.slots))
        return self.rings[-1]

    def close(self) -> None:
        for ring in self.rings:
            ring.close()


class RingReader:
    """Maps producers' rings on demand and validates references against them."""

    def __init__(self) -> None:
        self._maps: dict[str, mmap.mmap] = {}
        self.misses = 0

    def _segment(self, name: str) -> mmap.mmap:
        segment = self._maps.get(name)
        if segment is None:
            if "/" in name or name.startswith("."):
                raise SlotOverwrittenError(f"invalid segment name {name!r}")
            try:
                fd = os.open(shm_directory() / name, os.O_RDONLY)
            except FileNotFoundError as e:
                self.misses += 1
                raise SlotOverwrittenError(f"segment {name} no longer exists") from e
            try:
                segment = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
            finally:
                os.close(fd)
            self._forget_predecessors(name)
            self._maps[name] = segment
        return segment

    def _forget_predecessors(self, name: str) -> None:
        """A ring of a new producer process for the same stream: unmap those of
        the earlier ones (their memory is only freed once nobody maps it)."""
        stem, owner = name.rsplit(".", 2)[0], _owner(name)
        if owner is None:
            return
        for old in [n for n in self._maps if n.rsplit(".", 2)[0] == stem]:
            if _owner(old) != owner:
                try:
                    self._maps.pop(old).close()
                except BufferError:
                    log.debug("segment still has exported views; left to the GC")

    def view(self, ref: FrameRef, shape: tuple[int, ...]) -> np.ndarray:
        """A read-only uint8 view of the slot's pixels, valid until ``verify`` fails.

        Raises:
            SlotOverwrittenError: the slot no longer holds the referenced frame.
        """
        segment = self._segment(ref.segment)
        nbytes = int(np.prod(shape))
        stride = _slot_stride(nbytes)
        offset = ref.slot * stride
        if ref.slot < 0 or offset + stride > len(segment):
            # A ring's slots are sized for exactly one frame geometry (the producer
            # opens a new ring when it changes), so this is a corrupt reference.
            raise SlotOverwrittenError(f"slot {ref.slot} outside segment {ref.segment}")
        generation, size = _HEADER.unpack_from(segment, offset)
        if generation != ref.generation or size != nbytes:
            self.misses += 1
            raise SlotOverwrittenError(
                f"slot {ref.slot} of {ref.segment} was reused "
                f"(generation {generation}, expected {ref.generation})"
            )
        return np.frombuffer(segment, np.uint8, nbytes, offset + _HEADER.size).reshape(
            shape
        )

    def verify(self, ref: FrameRef, shape: tuple[int, ...]) -> None:
        """Confirm that the slot still holds the frame after it was used.

        Raises:
            SlotOverwrittenError: the slot was rewritten while it was being read.
        """
        segment = self._segment(ref.segment)
        offset = ref.slot * _slot_stride(int(np.prod(shape)))
        generation, _ = _HEADER.unpack_from(segment, offset)
        if generation != ref.generation:
            self.misses += 1
            raise SlotOverwrittenError(
                f"slot {ref.slot} of {ref.segment} was rewritten while being read"
            )

    def close(self) -> None:
        for segment in self._maps.values():
            try:
                segment.close()
            except BufferError:
                log.debug("segment still has exported views; left to the GC")
        self._maps.clear()


def ring_prefix(runtime_dir: Path) -> str:
    """Name prefix of one run's shared-memory rings (unique per runtime folder)."""
    return "fc-" + hashlib.sha256(str(runtime_dir).encode()).hexdigest()[:10]


def _owner(name: str) -> int | None:
    """The pid in a ring's name (``<prefix>-<stream>.<pid>.<n>``), if any."""
    parts = name.rsplit(".", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return int(parts[1])


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs. A zombie does not: a stage whose supervisor was
    killed with it is reparented to a PID 1 that may never reap it (containers)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc: trust the signal
    return state not in ("Z", "X")


def _unlink_rings(pattern: str, doomed: Callable[[int | None], bool], why: str) -> int:
    """Unlink the rings matching ``pattern`` whose owner pid ``doomed`` accepts."""
    removed = 0
    for path in shm_directory().glob(pattern):
        if not doomed(_owner(path.name)):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    if removed:
        log.info("removed %d shared-memory rings %s", removed, why)
    return removed


def remove_rings(stem: str) -> int:
    """Unlink the rings whose names start with ``stem`` and that this process
    does not own: a restarted producer's predecessors' (they died with it)."""
    own = os.getpid()
    return _unlink_rings(f"{stem}*", lambda pid: pid != own, "of an earlier process")


def remove_orphan_rings() -> int:
    """Unlink framechain rings whose producer is dead (a run killed whole, by a
    power cut or ``kill -9``, leaves its rings behind); other runs' are kept."""
    return _unlink_rings(
        "fc-*", lambda pid: pid is not None and not pid_alive(pid), "of dead processes"
    )


def remove_stale_rings(prefix: str) -> int:
    """Unlink every ring of one run (at its end); returns how many."""
    return _unlink_rings(f"{prefix}-*", lambda _pid: True, "left by this run")
