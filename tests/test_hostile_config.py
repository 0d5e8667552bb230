"""Malformed configs, as an operator (or an attacker) writes them: every one is refused
by ``framechain validate`` with exit 2 and exactly one line naming the cause, fast.

The corpus is generated from one valid config by single changes, so each case has
exactly one cause; the classes are alias bombs, encodings, duplicate keys, numeric
bounds, URLs, polygons and unknown keys or kinds.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from framechain.cli import main

BASE = """\
cameras:
  front:
    source:
      kind: file
      path: {clip}
    detect:
      classes: [person]
    rules:
      - kind: line
        name: door
        start: [0, 300]
        end: [800, 300]
      - kind: zone
        name: centre
        polygon: [[250, 150], [550, 150], [600, 440], [200, 440]]
detector:
  model: yolo11n.onnx
sinks:
  - kind: sqlite
    path: events.db
"""

BOMB = """\
a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def _data(clip: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(BASE.format(clip=clip))
    return data


def _edit(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], str]:
    def make(clip: Path) -> str:
        data = _data(clip)
        change(data)
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

    return make


def _text(change: Callable[[str], str]) -> Callable[[Path], str | bytes]:
    return lambda clip: change(BASE.format(clip=clip))


def _replace(old: str, new: str, count: int = -1) -> Callable[[Path], str | bytes]:
    """The text of the base config with ``old`` replaced by ``new``."""
    return _text(lambda t: t.replace(old, new, count))


def _camera(data: dict[str, Any]) -> dict[str, Any]:
    camera: dict[str, Any] = data["cameras"]["front"]
    return camera


def _set(*path: Any, value: Any) -> Callable[[Path], str]:
    def change(data: dict[str, Any]) -> None:
        node = data
        for step in path[:-1]:
            node = node.setdefault(step, {}) if isinstance(node, dict) else node[step]
        if isinstance(node, list) and path[-1] == len(node):
            node.append(value)
        else:
            node[path[-1]] = value

    return _edit(change)


def _source(**source: Any) -> Callable[[Path], str]:
    return _set("cameras", "front", "source", value=source)


def _polygon(points: Any) -> Callable[[Path], str]:
    return _set("cameras", "front", "rules", 1, "polygon", value=points)


def _random_bytes(n: int) -> bytes:
    out, seed = bytearray(), 7
    while len(out) < n:
        seed = zlib.crc32(seed.to_bytes(4, "little"))
        out += seed.to_bytes(4, "little")
    return bytes(out[:n])


PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452") + _random_bytes(200)

CASES: dict[str, tuple[Callable[[Path], str | bytes], str]] = {
    # alias bombs and loops
    "bomb-top-level": (lambda clip: BOMB + BASE.format(clip=clip), "alias bomb"),
    "bomb-classes": (
        _text(
            lambda t: (
                BOMB.replace("a: &a", "x-a: &a")
                + t.replace("classes: [person]", "classes: *i")
            )
        ),
        "alias bomb",
    ),
    "bomb-rules": (
        _text(lambda t: BOMB + t.replace("    rules:\n", "    rules: *i\n    x:\n")),
        "alias bomb",
    ),
    "alias-loop-list": (_text(lambda t: "loop: &x [1, *x]\n" + t), "refers to"),
    "alias-loop-map": (_text(lambda t: "loop: &x {y: *x}\n" + t), "refers to"),
    "merge-loop": (_text(lambda t: "loop: &x {<<: *x}\n" + t), "alias"),
    "deep-nesting": (_text(lambda t: t + "extra: " + "[" * 5000 + "]" * 5000), "deep"),
    "huge-file": (_text(lambda t: t + "#" * (5 << 20)), "larger than"),
    "undefined-alias": (_text(lambda t: t + "extra: *nowhere\n"), "invalid YAML"),
    # encodings and bytes
    "binary-garbage": (lambda clip: _random_bytes(4096), "not UTF-8"),
    "png": (lambda clip: PNG, "not UTF-8"),
    "utf16-bom": (lambda clip: BASE.format(clip=clip).encode("utf-16"), "UTF-16"),
    "utf16-no-bom": (
        lambda clip: BASE.format(clip=clip).encode("utf-16-le"),
        "NUL",
    ),
    "utf32": (lambda clip: BASE.format(clip=clip).encode("utf-32"), "UTF-32"),
    "utf8-bom": (lambda clip: b"\xef\xbb\xbf" + BASE.format(clip=clip).encode(), "BOM"),
    "nul-byte": (_replace("door", "do\0or"), "NUL"),
    "control-char": (_replace("door", "do\x07or"), "U+0007"),
    "latin1": (
        lambda clip: (
            BASE.format(clip=clip).replace("door", "porte é").encode("latin-1")
        ),
        "not UTF-8",
    ),
    "empty-file": (lambda clip: b"", "mapping"),
    "top-level-list": (lambda clip: "- cameras\n- detector\n", "mapping"),
    "bad-indent": (_replace("  front:", "\tfront:"), "invalid YAML"),
    "unclosed-bracket": (_replace("[person]", "[person"), "YAML"),
    "python-tag": (
        _text(lambda t: t + "extra: !!python/object/apply:os.system [ls]\n"),
        "not allowed",
    ),
    # duplicate keys
    "duplicate-detector": (
        _text(lambda t: t + "detector:\n  model: other.onnx\n"),
        "given twice",
    ),
    "duplicate-rule-name-key": (
        _replace("name: door\n", "name: door\n        name: gate\n"),
        "given twice",
    ),
    "duplicate-camera": (
        _text(
            lambda t: t.replace("detector:\n", "  front:\n    source: {}\ndetector:\n")
        ),
        "given twice",
    ),
    "duplicate-source-key": (
        _replace("kind: file\n", "kind: file\n      kind: file\n"),
        "given twice",
    ),
    "two-rules-one-name": (
        _set("cameras", "front", "rules", 1, "name", value="door"),
        "name of its own",
    ),
    # numeric bounds
    "start-overflow": (_replace("[0, 300]", "[1e400, 0]"), "number"),
    "start-overflow-float": (
        _replace("[0, 300]", "[1.0e+400, 0]"),
        "less than",
    ),
    "lost-track-text-inf": (_set("tracker", "lost_track_s", value="1e400"), "finite"),
    "lost-track-inf": (_set("tracker", "lost_track_s", value=float("inf")), "finite"),
    "lost-track-nan": (_set("tracker", "lost_track_s", value=float("nan")), "finite"),
    "max-det-2-70": (_set("detector", "max_det", value=2**70), "out of range"),
    "max-det-huge": (_set("detector", "max_det", value=10**9), "less than"),
    "max-det-zero": (_set("detector", "max_det", value=0), "greater than"),
    "frame-hwm-huge": (_set("links", "frame_hwm", value=10**12), "less than"),
    "event-hwm-huge": (_set("links", "event_hwm", value=10**12), "less than"),
    "confidence-high": (_set("detector", "confidence", value=1.5), "less than"),
    "imgsz-negative": (_set("detector", "imgsz", value=-1), "greater than"),
    "imgsz-text": (_set("detector", "imgsz", value="big"), "integer"),
    "stop-timeout-huge": (_set("supervisor", "stop_timeout_s", value=1e9), "less than"),
    "restart-backoff-negative": (
        _set("supervisor", "restart_backoff_s", value=-1),
        "greater than",
    ),
    "heartbeat-huge": (
        _set("supervisor", "heartbeat_timeout_s", value=1e12),
        "less than",
    ),
    "every-nth-huge": (
        _set("cameras", "front", "decode", "every_nth", value=10**9),
        "less than",
    ),
    "coordinate-huge": (_polygon([[0, 0], [1e12, 0], [0, 100]]), "less than"),
    "line-3-numbers": (
        _set("cameras", "front", "rules", 0, "start", value=[1, 2, 3]),
        "[x, y]",
    ),
    "http-port-out-of-range": (_set("http", "listen", value="127.0.0.1:99999"), "port"),
    # URLs per source kind
    "rtsp-not-a-url": (_source(kind="rtsp", url="not a url"), "rtsp://"),
    "rtsp-http-scheme": (_source(kind="rtsp", url="http://10.0.0.1/cam"), "rtsp://"),
    "rtsp-empty-host": (_source(kind="rtsp", url="rtsp://"), "host"),
    "rtsp-port-range": (_source(kind="rtsp", url="rtsp://127.0.0.1:99999/cam"), "port"),
    "rtsp-port-zero": (_source(kind="rtsp", url="rtsp://127.0.0.1:0/cam"), "port"),
    "rtsp-no-host-port": (_source(kind="rtsp", url="rtsp://:554/cam"), "host"),
    "rtsp-space-in-host": (_source(kind="rtsp", url="rtsp://my camera/x"), "host"),
    "http-rtsp-scheme": (_source(kind="http", url="rtsp://10.0.0.1/cam"), "http://"),
    "http-ftp-scheme": (_source(kind="http", url="ftp://10.0.0.1/x"), "http://"),
    "rtsp-plain-password": (
        _source(kind="rtsp", url="rtsp://u:pw@10.0.0.1/x"),
        "plain text",
    ),
    "mqtt-port": (
        _set("sinks", 1, value={"kind": "mqtt", "host": "localhost", "port": 70000}),
        "less than",
    ),
    # polygons
    "polygon-bowtie": (_polygon([[0, 0], [100, 100], [100, 0], [0, 100]]), "cross"),
    "polygon-collinear": (_polygon([[0, 0], [50, 50], [100, 100]]), "area"),
    "polygon-3d": (_polygon([[0, 0, 1], [100, 0, 1], [0, 100, 1]]), "[x, y]"),
    "polygon-two-points": (_polygon([[0, 0], [100, 0]]), "at least 3"),
    "polygon-string": (_polygon("0,0 100,0 0,100"), "list"),
    "polygon-word-vertex": (_polygon([[0, 0], ["a", 0], [0, 100]]), "number"),
    "polygon-figure-eight": (
        _polygon([[0, 0], [200, 0], [200, 200], [100, 200], [100, -50], [0, -50]]),
        "cross",
    ),
    "crowd-bowtie": (
        _set(
            "cameras",
            "front",
            "rules",
            1,
            value={
                "kind": "crowd",
                "name": "c",
                "threshold": 3,
                "polygon": [[0, 0], [100, 100], [100, 0], [0, 100]],
            },
        ),
        "cross",
    ),
    # unknown keys and kinds
    "typo-top-key": (
        _replace("detector:", "detecter:"),
        "did you mean",
    ),
    "cyrillic-key": (
        _replace("detector:", "d\u0435tector:"),
        "CYRILLIC",
    ),
    "zero-width-key": (
        _replace("detector:", "detector\u200b:"),
        "ZERO WIDTH",
    ),
    "typo-rule-key": (
        _replace("name: door", "nam: door"),
        "did you mean",
    ),
    "typo-source-key": (_replace("path:", "pth:", 1), "did you mean"),
    "rule-kind-typo": (
        _replace("kind: line", "kind: lines"),
        "the kinds are",
    ),
    "source-kind-typo": (
        _replace("kind: file", "kind: fiel"),
        "did you mean 'file'",
    ),
    "sink-kind-typo": (
        _replace("kind: sqlite", "kind: sqlit"),
        "the kinds are",
    ),
    "rule-without-kind": (
        _replace("- kind: line\n        name: door", "- name: door"),
        "needs a kind",
    ),
    "camera-name-space": (
        _replace("  front:", "  front door:"),
        "pattern",
    ),
    "missing-model-file": (
        _set("detector", "model", value="nonexistent.onnx"),
        "nonexistent",
    ),
    "missing-clip": (_source(kind="file", path="/nonexistent/clip.mp4"), "does not"),
    "log-level-word": (_set("log_level", value="LOUD"), "pattern"),
    "no-cameras": (_set("cameras", value={}), "at least 1"),
    "classes-number-list": (
        _set("cameras", "front", "detect", "classes", value=[1, 2]),
        "string",
    ),
}


def _validate(path: Path) -> tuple[int, list[str], float]:
    err = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["validate", str(path)])
    return code, err.getvalue().splitlines(), time.perf_counter() - start


def test_the_corpus_is_big_enough() -> None:
    assert len(CASES) >= 60


@pytest.fixture
def corpus_env(monkeypatch: pytest.MonkeyPatch, assets: Path) -> None:
    monkeypatch.setenv("FRAMECHAIN_MODELS", str(assets))


def test_the_base_config_is_valid(
    tmp_path: Path, assets: Path, corpus_env: None
) -> None:
    path = tmp_path / "base.yaml"
    path.write_text(BASE.format(clip=assets / "crowd.mp4"))
    code, lines, _ = _validate(path)
    assert (code, lines) == (0, [])


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_config_is_one_line(
    case: str, tmp_path: Path, assets: Path, corpus_env: None
) -> None:
    make, expected = CASES[case]
    content = make(assets / "crowd.mp4")
    path = tmp_path / f"{case}.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    code, lines, seconds = _validate(path)
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and expected in lines[0], lines
    assert "Traceback" not in lines[0] and "unexpected" not in lines[0]
    assert seconds < 2.0


@pytest.mark.parametrize(
    "case", ["bomb-rules", "alias-loop-list", "png", "cyrillic-key"]
)
def test_cli_answers_within_two_seconds(
    case: str, tmp_path: Path, assets: Path
) -> None:
    """The same through the real command, interpreter start included."""
    content = CASES[case][0](assets / "crowd.mp4")
    path = tmp_path / "config.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "framechain.cli", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "FRAMECHAIN_MODELS": str(assets)},
    )
    seconds = time.perf_counter() - start
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and done.stdout == ""
    assert seconds < 2.0


def test_rule_outside_the_frame_is_a_warning_event(tmp_path: Path) -> None:
    """A line drawn for 1920×1080 on an 800×450 camera: the config cannot know,
    the first frame does. One warning event (stored, once) and one log line; the
    rules that fit still count and the run succeeds."""
    from conftest import ASSETS, CROWD_LINE, framechain, read_events, write_config

    wide = {**CROWD_LINE, "name": "hd", "start": [0, 700], "end": [1920, 700]}
    config = write_config(
        tmp_path / "outside.yaml",
        {
            "cam": {
                "source": {"kind": "file", "path": str(ASSETS / "crowd.mp4")},
                "rules": [CROWD_LINE, wide],
            }
        },
    )
    result = framechain("run", str(config), "--no-progress", timeout=180)
    assert result.returncode == 0, result.stderr
    events = read_events(tmp_path / "events.db")
    warnings = [e for e in events if e["kind"] == "rule_outside_frame"]
    assert len(warnings) == 1 and warnings[0]["rule"] == "hd"
    assert warnings[0]["seq"] == 0
    logged = [line for line in result.stderr.splitlines() if "outside the" in line]
    assert len(logged) == 1 and "rule hd" in logged[0] and "800x450" in logged[0]
    assert any(e["kind"] == "line_crossing" and e["rule"] == "mid" for e in events)
