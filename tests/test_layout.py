"""The house plan holds: the framework imports no stage kind, a new stage kind is one
registration, the event's generated forms match the ``Event`` struct, and modules
stay small. Each test names the way the layout used to break."""

from __future__ import annotations

import ast
import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import CROWD_LINE, REPO, chain_env, read_events, run_to_end

# package -> the packages it must never import
FORBIDDEN = {
    "pipeline": ("stages", "framechain", "benchmarks"),
    "stages": ("framechain", "benchmarks"),
    "tests": ("benchmarks",),
}
ALLOWED = {"benchmarks.reference_tracker"}
"""The reference tracker both the tracker benchmark and the parity tests hold
ours to; it times nothing."""


def _modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_forbidden_imports(package: str) -> None:
    """pipeline/ imported 13 stage config classes at import time and the stage
    modules lazily from its CLI, replay, export and bench modules; every import,
    lazy ones included, is read from the source here."""
    offences = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in _modules(package)
        for name in sorted(_imported(path))
        if name.split(".")[0] in FORBIDDEN[package] and name not in ALLOWED
    ]
    assert not offences, offences


def _two_styles(path: Path) -> set[str]:
    """Modules ``path`` both imports as a module (``import a.b``, ``from a
    import b``) and takes names from (``from a.b import c``)."""
    as_module, names_from = set(), set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            as_module |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                as_file = REPO / (full.replace(".", "/") + ".py")
                if as_file.exists() or (REPO / full.replace(".", "/")).is_dir():
                    as_module.add(full)
                else:
                    names_from.add(node.module)
    return as_module & names_from


def test_one_import_style_per_module() -> None:
    """decode's stage called ``convert.open_codec`` and imported ``MICROS`` from
    the same module: a module is used one way in each file."""
    offences = [
        f"{path.relative_to(REPO)}: {sorted(both)}"
        for package in ("pipeline", "stages", "framechain", "benchmarks")
        for path in _modules(package)
        if (both := _two_styles(path))
    ]
    assert not offences, offences


def test_importing_every_framework_module_loads_no_stage() -> None:
    """The same at run time, in a fresh interpreter: every module of pipeline/
    imported, and not one stage, application or benchmark module came with it."""
    code = textwrap.dedent(
        """
        import importlib, pkgutil, sys
        import pipeline
        for module in pkgutil.walk_packages(pipeline.__path__, "pipeline."):
            importlib.import_module(module.name)
        loaded = sorted(
            m for m in sys.modules
            if m.split(".")[0] in ("stages", "framechain", "benchmarks")
        )
        print(len([m for m in sys.modules if m.startswith("pipeline.")]), loaded)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    count, loaded = out.stdout.split(" ", 1)
    assert int(count) >= 20 and loaded.strip() == "[]", out.stdout


def _strings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string literal in a module but its docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(
            node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
        )
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_framework_names_no_stage_kind() -> None:
    """The supervisor matched "sink." and "track." prefixes, observability and
    the summary "capture."/"decode."/"detect": no string literal in pipeline/
    (docstrings aside) is a stage kind or a process name built from one."""
    kinds = ("capture", "decode", "detect", "track", "annotate", "sink")
    offences = [
        f"{path.name}:{line} {text!r}"
        for path in _modules("pipeline")
        for line, text in _strings(path)
        if text in kinds or any(text.startswith(f"{k}.") for k in kinds)
    ]
    assert not offences, offences


def test_no_kind_names_another_kinds_processes_or_endpoints() -> None:
    """Inserting a step between detect and track meant editing detect's literal
    downstream ports (``track.{cam}``) and decode's (``detect.in``): no string in
    a stage kind's package (docstrings aside) starts with another kind's process
    prefix; the wiring comes from the kinds' declared ports."""
    kinds = {
        "capture": "capture",
        "decode": "decode",
        "detect": "detect",
        "track": "track",
        "annotate": "annotate",
        "sinks": "sink",
    }
    offences = [
        f"{path.relative_to(REPO)}:{line} {text!r}"
        for package, own in kinds.items()
        for path in _modules(f"stages/{package}")
        for line, text in _strings(path)
        if any(text.startswith(f"{k}.") for k in kinds.values() if k != own)
    ]
    assert not offences, offences


def test_event_schema_document_is_generated_from_the_struct() -> None:
    """The event's fields were written four times (the struct, the SQLite schema,
    the event store's column list, the JSON Schema), and what each kind's data
    holds by hand; the document must be what the generator makes of ``Event``
    and the built-in event kinds now."""
    from framechain.app import builtin_registry
    from pipeline.eventschema import render_json_schema

    document = (REPO / "docs" / "event.schema.json").read_text()
    kinds = builtin_registry().events.all()
    assert document == render_json_schema(kinds), (
        "docs/event.schema.json drifted from pipeline.messages.Event or the "
        "event kinds; run framechain schema > docs/event.schema.json"
    )


def test_sqlite_columns_follow_the_struct(tmp_path: Path) -> None:
    """A real store has one column per ``Event`` field, in order, and a store made
    with the first release's columns gains the later ones in place."""
    import msgspec

    from pipeline.messages import Event
    from stages.sinks.eventstore import COLUMNS
    from stages.sinks.sqlite import SqliteSink, SqliteSinkConfig

    fields = [f.name for f in msgspec.structs.fields(Event)]
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as db:  # the first release's table
        db.execute(
            "CREATE TABLE events (event_id TEXT PRIMARY KEY, stream_id TEXT NOT "
            "NULL, rule TEXT NOT NULL, kind TEXT NOT NULL, seq INTEGER NOT NULL, pts "
            "REAL NOT NULL, capture_ts REAL NOT NULL, track_id INTEGER NOT NULL, "
            "class_id INTEGER NOT NULL, class_name TEXT NOT NULL, direction TEXT NOT "
            "NULL, value REAL NOT NULL, data TEXT NOT NULL)"
        )
    for path in (tmp_path / "new.db", old):
        sink = SqliteSink(SqliteSinkConfig(kind="sqlite", path=str(path)), ["cam"])
        sink.setup()
        event = Event(
            "cam:door:line_crossing:3:7",
            "cam",
            "door",
            "line_crossing",
            7,
            0.3,
            1.0,
            track_id=3,
            data={"total_in": 1},
            low_confidence=True,
        )
        sink.write([event, event])
        sink.close()
        with sqlite3.connect(path) as db:
            columns = [row[1] for row in db.execute("PRAGMA table_info(events)")]
        assert columns == fields == list(COLUMNS)
        (row,) = read_events(path)
        assert row["data"] == '{"total_in":1}' and row["low_confidence"] == 1
        assert row["track_id"] == 3 and row["snapshot"] == ""


TALLY_PLUGIN = '''
"""A sink kind defined outside framechain: one line per event id in a text file."""

import os
from typing import Literal

from pydantic import Field

from pipeline.configtypes import ConfigPath, StrictModel
from stages.sinks.base import EventSink
from stages.sinks.kind import sink_kind


class TallyConfig(StrictModel):
    kind: Literal["tally"] = Field(description="Event ids, one per line.")
    name: str = Field(default="tally", description="Sink name.")
    path: ConfigPath = Field(description="The text file.")

    def target(self) -> str:
        return self.path


class TallySink(EventSink):
    def __init__(self, config, streams):
        super().__init__(streams)
        self.file = open(config.path, "a")

    def write(self, events):
        self.file.writelines(f"{e.event_id}\\n" for e in events)

    def flush(self):
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self):
        self.file.close()


def register(registry):
    registry.register(sink_kind(TallyConfig, lambda _l, c, s: TallySink(c, s)))
'''


@pytest.mark.slow
def test_a_sink_kind_defined_in_a_test_runs_through_framechain_run(
    tmp_path: Path, short_clip: Path
) -> None:
    """A new sink kind is its config, its class and one registration, in a module of
    its own named under ``plugins``: no framechain file is touched, and the chain
    runs it beside the built-in sqlite sink, which stores the same events."""
    (tmp_path / "tally_plugin.py").write_text(TALLY_PLUGIN)
    config = tmp_path / "chain.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "plugins": ["tally_plugin"],
                "cameras": {
                    "crowd": {
                        "source": {"kind": "file", "path": str(short_clip)},
                        "rules": [CROWD_LINE],
                    }
                },
                "detector": {"model": "yolo11n.onnx"},
                "sinks": [
                    {"kind": "sqlite", "path": str(tmp_path / "events.db")},
                    {"kind": "tally", "path": str(tmp_path / "ids.txt")},
                ],
            }
        )
    )
    env = {**chain_env(), "PYTHONPATH": f"{tmp_path}:{REPO}"}
    stdout, _ = run_to_end(config, env)
    assert "sink tally:" in stdout
    stored = {e["event_id"] for e in read_events(tmp_path / "events.db")}
    tallied = (tmp_path / "ids.txt").read_text().split()
    assert stored and sorted(tallied) == sorted(stored)


def test_an_unknown_plugin_is_one_line(tmp_path: Path) -> None:
    """A plugin that cannot be imported is named, with the fix, exit 2."""
    from conftest import framechain

    config = tmp_path / "chain.yaml"
    config.write_text(json.dumps({"plugins": ["no_such_plugin_here"]}))
    result = framechain("validate", str(config))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: plugins: cannot import 'no_such_plugin_here' (No module named "
        "'no_such_plugin_here'); install it or put it on PYTHONPATH"
    ]


def test_the_api_reference_is_generated_from_the_openapi_document() -> None:
    """docs/api.md is what `framechain schema --api` renders from the service's
    own OpenAPI document: no path or type there that the service lacks."""
    from framechain.app import builtin_registry
    from stages.api.apidoc import openapi_document, render_markdown

    kinds = [k.name for k in builtin_registry().events.all()]
    document = (REPO / "docs" / "api.md").read_text()
    assert document == render_markdown(openapi_document(kinds)), (
        "docs/api.md is stale: framechain schema --api > docs/api.md"
    )
