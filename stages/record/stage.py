"""The recorder: a service beside the chain that keeps each camera's rolling
buffer of packets (capture's best-effort copies) and cuts a clip for each event
from ``pre_s`` before to ``post_s`` after it, at keyframes.

It follows the event store (read-only) rather than a feed: a stored event is
never missed for a dropped message, and what it has done is its row number,
kept with the clips still waiting for their post-roll in a small state file, so
a restarted recorder goes on where it stopped, with the buffer it left on disk.
A clip is cut once the buffer holds ``post_s`` after its event, or once the
camera has been quiet for ``QUIET_S`` past that (a file that ended, a camera
gone offline): the clip then ends where the video did.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import FramechainError
from pipeline.messages import Packet
from pipeline.retention import Pacer, Pruned, prune_files
from pipeline.stage import Emit, Received, Stage
from stages.record.buffer import CameraBuffer
from stages.record.config import ClipConfig, clip_path, wants_clip
from stages.record.stats import RecordStats
from stages.sinks import eventstore

log = logging.getLogger(__name__)

QUIET_S = 5.0
"""A camera silent this long past a clip's end: the clip is cut with what there is."""
KEEP_S = 60.0
"""Seconds of stream kept besides a clip's span: room for a long GOP before the
window and for the store's delay in showing the event."""
POLL_S = 0.5
REORDER_S = 0.5
"""Capture time past the post-roll before a clip is cut: packets come in decode
order, a frame's a little after its presentation time."""


@dataclass(frozen=True, slots=True)
class Pending:
    event_id: str
    camera: str
    at: float  # the event's capture time
    pts: float  # the event's frame, in the stream's time


class RecordStage(Stage):
    max_batch = 256

    def __init__(
        self, cameras: Mapping[str, ClipConfig], store: Path, state: Path
    ) -> None:
        self.cameras = dict(cameras)
        self.store = store
        self.state_path = state
        self.buffers: dict[str, CameraBuffer] = {}
        self.pending: list[Pending] = []
        self._after = -1  # the last store row looked at; -1: not known yet
        self._next_poll = 0.0
        self._store_problem = ""
        self._pacer = Pacer()
        self._pruned = {name: Pruned() for name in cameras}
        self._stats = RecordStats()

    def setup(self) -> None:
        for name, clips in self.cameras.items():
            keep = clips.pre_s + clips.post_s + KEEP_S
            buffer = CameraBuffer(Path(clips.directory) / name / ".buffer", keep)
            buffer.load()
            self.buffers[name] = buffer
        self._load_state()

    def _load_state(self) -> None:
        try:
            saved = json.loads(self.state_path.read_text())
            self._after = int(saved["after"])
            self.pending = [
                Pending(str(e), str(c), float(t), float(p))
                for e, c, t, p in saved["pending"]
                if c in self.cameras
            ]
        except FileNotFoundError:
            pass  # a first start: from the store's newest row on (see _poll)
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning(
                "recorder state %s unreadable (%s): starting from new events",
                self.state_path,
                e,
            )

    def _save_state(self) -> None:
        body = json.dumps(
            {
                "after": self._after,
                "pending": [[p.event_id, p.camera, p.at, p.pts] for p in self.pending],
            }
        )
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        part = self.state_path.with_name(self.state_path.name + ".part")
        part.write_text(body)
        os.replace(part, self.state_path)

    def process(self, batch: Sequence[Received]) -> Iterable[Emit]:
        for item in batch:
            message = item.message
            buffer = (
                self.buffers.get(message.stream_id)
                if isinstance(message, Packet)
                else None
            )
            if buffer is None or not item.parts:
                continue
            assert isinstance(message, Packet)
            buffer.add(message, bytes(item.parts[0]))
        return ()

    def tick(self, now: float) -> Iterable[Emit]:
        if time.monotonic() >= self._next_poll:
            self._next_poll = time.monotonic() + POLL_S
            changed = self._poll()
            changed |= self._cut_ready()
            if changed:
                self._save_state()
            for name, buffer in self.buffers.items():
                waiting = [p.at for p in self.pending if p.camera == name]
                clips = self.cameras[name]
                buffer.trim(min(waiting, default=float("inf")) - clips.pre_s - KEEP_S)
            if self._pacer.due():
                self._prune()
        return ()

    def _poll(self) -> bool:
        """New events from the store become pending clips."""
        try:
            rows = [] if self._after < 0 else eventstore.after(self.store, self._after)
            if not rows and (
                self._after < 0 or self._after > eventstore.last_row(self.store)
            ):
                # a first start, or a store that was replaced: from the events
                # whose video a buffer may still hold (the next poll reads them)
                self._after = eventstore.last_row(self.store, time.time() - KEEP_S)
                return True
        except FramechainError as e:
            if str(e) != self._store_problem:
                log.warning("clips wait for the event store: %s", e)
                self._store_problem = str(e)
            return False
        for row in rows:
            self._after = int(row["row"])
            clips = self.cameras.get(row["stream_id"])
            if clips is not None and wants_clip(clips, row["kind"], row["track_id"]):
                self.pending.append(
                    Pending(
                        row["event_id"], row["stream_id"], row["capture_ts"], row["pts"]
                    )
                )
        return bool(rows)

    def _cut_ready(self) -> bool:
        left, changed = [], False
        for clip in self.pending:
            clips = self.cameras[clip.camera]
            buffer = self.buffers[clip.camera]
            end = clip.at + clips.post_s + REORDER_S
            if buffer.newest_ts < end and time.time() < end + QUIET_S:
                left.append(clip)
                continue
            self._cut(clip, clips, buffer)
            changed = True
        self.pending = left
        self._stats.clips_pending = len(left)
        return changed

    def _cut(self, clip: Pending, clips: ClipConfig, buffer: CameraBuffer) -> None:
        from stages.record.cutter import write_clip

        window = buffer.window(clip.at, clip.pts, clips.pre_s, clips.post_s)
        if window is None:
            self._stats.clips_missed += 1
            log.warning(
                "no clip for %s: the buffer no longer holds its video (the "
                "recorder was down or the camera offline)",
                clip.event_id,
            )
            return
        path = clip_path(clips.directory, clip.camera, clip.event_id)
        try:
            write_clip(*window, path)
        except (ValueError, OSError) as e:
            self._stats.clips_failed += 1
            log.error("clip of %s not written: %s", clip.event_id, e)
            return
        self._stats.clips_written += 1

    def _prune(self) -> None:
        for name, clips in self.cameras.items():
            limits = clips.retention
            if limits.max_bytes or limits.max_age_s:
                folder = Path(clips.directory) / name
                prune_files(folder.glob("*.mp4"), limits, self._pruned[name])

    def stop(self) -> Iterable[Emit]:
        """The chain stops (or its files ended): the clips still waiting are
        cut with the video there is; their post-roll will not come now."""
        self._poll()
        for clip in self.pending:
            clips = self.cameras[clip.camera]
            buffer = self.buffers[clip.camera]
            self._cut(clip, clips, buffer)
        self.pending = []
        self._save_state()
        return ()

    def stats(self) -> RecordStats:
        stats = self._stats
        buffers = self.buffers.values()
        stats.packets = sum(b.packets for b in buffers)
        stats.gaps = sum(b.gaps for b in buffers)
        stats.skipped = sum(b.skipped for b in buffers)
        stats.clips_pruned = sum(p.files for p in self._pruned.values())
        return stats

    def close(self) -> None:
        for buffer in self.buffers.values():
            buffer.close()
