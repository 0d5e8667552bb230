"""Events as JSON Lines, one object per line, appended and fsync'd per batch.

Ids already in the file are loaded at start, so redelivered events are not appended
again."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Literal

import msgspec
from pydantic import Field

from pipeline.configtypes import ConfigPath, StrictModel
from pipeline.errors import FramechainError
from pipeline.messages import Event
from stages.sinks.base import EventSink


class JsonlSinkConfig(StrictModel):
    kind: Literal["jsonl"] = Field(description="JSON Lines event file.")
    name: str = Field(
        default="jsonl",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Sink name, unique among sinks.",
    )

    def target(self) -> str:
        """Where events go, for the run summary."""
        return self.path

    path: ConfigPath = Field(description="Output file; appended to.")


class JsonlSink(EventSink):
    def __init__(self, config: JsonlSinkConfig, streams: Sequence[str]) -> None:
        super().__init__(streams)
        self.config = config
        self._file: IO[bytes] | None = None
        self._seen: set[str] = set()
        self._encoder = msgspec.json.Encoder()

    def setup(self) -> None:
        path = Path(self.config.path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                with path.open("rb") as existing:
                    for line in existing:
                        if line.strip():
                            self._seen.add(json.loads(line)["event_id"])
            self._file = path.open("ab")
        except (OSError, ValueError, KeyError) as e:
            raise FramechainError(f"cannot open event file {path}: {e}") from e

    def write(self, events: Sequence[Event]) -> None:
        assert self._file is not None
        for event in events:
            if event.event_id in self._seen:
                continue
            self._seen.add(event.event_id)
            self._file.write(
                self._encoder.encode(msgspec.structs.asdict(event)) + b"\n"
            )

    def flush(self) -> None:
        if self._file is None:
            return
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as e:
            raise FramechainError(
                f"cannot write {self.config.path}: {e}; is the disk full?"
            ) from e

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
