"""Damaged recordings through the whole chain: each run ends by itself, with one
final line naming the file and the cause, no traceback, and every frame that lies
before the damage detected. A file that cannot be read at all fails at once
(exit 1, no restarts); one read in part ends with exit 0 and a warning."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from conftest import ASSETS, CROWD_LINE, framechain, write_config
from helpers.damage import VARIANTS, Damaged, make_corpus

pytestmark = pytest.mark.slow

# a run over a 90-frame clip takes ~6 s here; a damaged one must not take longer
# than a whole clip's run plus supervisor start and stop
RUN_BOUND_S = 45.0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Damaged]:
    folder = tmp_path_factory.mktemp("damaged")
    return {d.name: d for d in make_corpus(ASSETS / "crowd.mp4", folder)}


def _count(pattern: str, text: str) -> int:
    found = re.search(pattern, text)
    return int(found.group(1)) if found else 0


def test_corpus_covers_every_kind_of_damage(corpus: dict[str, Damaged]) -> None:
    assert len(corpus) >= 20
    kinds = ("empty", "not-a-video", "header-cut", "index", "stream-cut", "zeroed")
    for kind in (*kinds, "flips"):
        assert any(kind in name for name in corpus), kind
    rates = {name.split("-flips-")[1] for name in corpus if "-flips-" in name}
    assert len(rates) >= 3  # bits flipped at several rates
    assert any(d.intact_frames >= 40 for d in corpus.values())


@pytest.mark.parametrize("name", [name for name, _, _ in VARIANTS])
def test_damaged_file_ends_with_one_line(
    name: str, corpus: dict[str, Damaged], tmp_path: Path
) -> None:
    damaged = corpus[name]
    config = write_config(
        tmp_path / "damaged.yaml",
        {
            "cam": {
                "source": {"kind": "file", "path": str(damaged.path)},
                "rules": [CROWD_LINE],
            }
        },
    )
    started = time.monotonic()
    result = framechain("run", str(config), "--no-progress", timeout=120)
    took = time.monotonic() - started
    output = result.stdout + result.stderr
    assert took < RUN_BOUND_S, f"{name} took {took:.1f}s"
    assert "Traceback" not in output, output
    assert "unexpected" not in result.stderr, result.stderr
    final = [
        line for line in result.stderr.splitlines() if line.startswith("framechain:")
    ]
    assert len(final) == 1, result.stderr
    assert result.stderr.rstrip().endswith(final[0])
    assert str(damaged.path) in final[0], final[0]
    assert "restarting" not in result.stderr  # a damaged file is no reason to
    frames = _count(r"camera cam: (\d+) frames", result.stdout)
    inferred = _count(r"detect: (\d+) frames inferred", result.stdout)
    if result.returncode == 0:
        assert final[0].startswith("framechain: warning:"), final[0]
        assert frames > 0 and inferred == frames, result.stdout
    else:
        assert result.returncode == 1, output
        assert "cannot run" in final[0], final[0]
        assert frames == 0, result.stdout
    assert frames >= damaged.intact_frames, (name, frames, damaged.intact_frames)


@pytest.mark.parametrize(
    "container", [("mp4", True), ("mp4", False), ("mpegts", False), ("matroska", False)]
)
def test_whole_files_raise_no_warning(
    container: tuple[str, bool], tmp_path: Path
) -> None:
    """The control: the same clips undamaged (and the shared clips as they are)
    are read to the end with no problem reported, so a warning means damage."""
    from helpers.damage import make_clip

    from stages.capture.file import CaptureStage, FileSourceConfig

    clip = make_clip(ASSETS / "crowd.mp4", tmp_path, *container)
    for path in (clip.path, ASSETS / "traffic.mp4", ASSETS / "people-1080p.mp4"):
        stage = CaptureStage("cam", FileSourceConfig(kind="file", path=str(path)))
        stage.setup()
        packets = 0
        while not stage.finished():
            packets += len(list(stage.produce()))
        stage.close()
        assert stage.stats().problem == "", (path, stage.stats().problem)
        assert stage.stats().read_errors == 0 and packets > 1
