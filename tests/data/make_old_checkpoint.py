"""Writes ``track-format0.ckpt``: a track checkpoint as framechain wrote it before
its state was snapshotted explicitly (2898473 and earlier: a pickle of the stage's
private attributes). Kept so that the explicit-state code is tested against a real
file of the old format; this script only runs against that old code:

    git worktree add /tmp/old 2898473
    PYTHONPATH=/tmp/old:tests python tests/data/make_old_checkpoint.py OUT

The file holds the state after frame 39 of ``tests/trackscene.py`` (fingerprint
"scene", run "old-run", not ended) and the events not yet stored by its one sink.
"""

from __future__ import annotations

import sys
from pathlib import Path

import trackscene

from pipeline.checkpoint import CheckpointFile
from stages.track.recovery import Recovery
from stages.track.stage import TrackStage
from stages.track.tracking import TrackerConfig

if __name__ == "__main__":
    out = Path(sys.argv[1])
    recovery = Recovery(
        checkpoint=CheckpointFile(out),
        fingerprint="scene",
        run_id="old-run",
        acknowledged=True,
    )
    stage = TrackStage(
        "cam", TrackerConfig(), trackscene.rules(), aggregate_s=1.0, recovery=recovery
    )
    stage.setup()
    events = trackscene.drive(stage, range(40))
    print(f"{len(events)} events, outbox {len(stage.outbox)}, {out.stat().st_size} B")
