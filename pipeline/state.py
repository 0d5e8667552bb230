"""Explicit state: what a stateful object hands to a checkpoint, as msgspec structs.

A stage's checkpoint used to pickle private attributes listed by name, so a renamed
field broke resume without a word, and the state folder held code to run. Now each
stateful object says what it carries in a ``snapshot()`` returning a struct and takes
it back in ``restore()``; the bytes are msgpack, decoded against the struct's type,
so a checkpoint either decodes into exactly those fields or is refused.

NumPy arrays travel as ``Array`` (dtype, shape, bytes): msgspec does not encode
them itself, and this keeps their exact bits (tracker state must resume to the bit).
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt

from pipeline.errors import FramechainError

S = TypeVar("S", bound=msgspec.Struct)


class StateError(FramechainError):
    """A snapshot's bytes do not decode into the struct they should be."""


class Array(msgspec.Struct, frozen=True, array_like=True):
    """One numpy array, bit for bit."""

    dtype: str
    shape: tuple[int, ...]
    data: bytes

    def __post_init__(self) -> None:
        """Checked as it is decoded, so a state that does not fit is refused
        before any of it is restored."""
        dtype = np.dtype(self.dtype)
        if dtype.hasobject:
            raise ValueError("arrays of Python objects are not state")
        count = int(np.prod(self.shape, dtype=np.int64))
        if min(self.shape, default=0) < 0 or count * dtype.itemsize != len(self.data):
            raise ValueError(
                f"array of shape {self.shape} ({self.dtype}) has {len(self.data)} bytes"
            )

    @classmethod
    def of(cls, array: npt.NDArray[Any]) -> Array:
        array = np.ascontiguousarray(array)
        return cls(array.dtype.str, tuple(array.shape), array.tobytes())

    def value(self) -> npt.NDArray[Any]:
        """A writable array (the restored object goes on updating it in place)."""
        array = np.frombuffer(self.data, np.dtype(self.dtype)).reshape(self.shape)
        return array.copy()


def encode(state: msgspec.Struct) -> bytes:
    return msgspec.msgpack.encode(state)


def decode(data: bytes | msgspec.Raw, kind: type[S]) -> S:
    """``data`` as a ``kind``, every struct's ``__post_init__`` checks passed;
    anything else is a ``StateError`` (one line)."""
    try:
        return msgspec.msgpack.decode(data, type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise StateError(f"{kind.__name__}: {e}") from e
