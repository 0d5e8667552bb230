"""YAML in, positions out: the config file read into plain data plus the line of
every key, so that each validation error names ``path (line N)``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigError
from pipeline.log import redact

Lines = Mapping[tuple[Any, ...], int]


def _line_index(
    node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]
) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, key.value)
            _line_index(value, child, out)
            out[child] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            _line_index(value, (*path, i), out)


def display(
    loc: tuple[Any, ...], lines: Mapping[tuple[Any, ...], int], data: Any
) -> tuple[str, int | None]:
    """Turn a pydantic error location into ``a.b[0].c`` and its YAML line, skipping
    the union-tag steps (``kind`` values) pydantic inserts with no YAML counterpart."""
    path: tuple[Any, ...] = ()
    node = data
    for step in loc:
        if step == "[key]":
            continue  # pydantic's marker for an invalid mapping key
        if isinstance(node, dict) and step not in node and node.get("kind") == step:
            continue  # a discriminated union's tag
        path = (*path, step)
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            node = None
    text = ""
    for step in path:
        text += (
            f"[{step}]"
            if isinstance(step, int)
            else (f".{step}" if text else str(step))
        )
    line = None
    probe = path
    while probe and line is None:
        line = lines.get(probe)
        probe = probe[:-1]
    return text or "(top level)", line


def format_problem(path: str, line: int | None, message: str) -> str:
    where = f" (line {line})" if line is not None else ""
    return f"{path}{where}: {message}"


def pydantic_message(error: Mapping[str, Any]) -> str:
    kind, message = str(error["type"]), str(error["msg"])
    if kind == "extra_forbidden":
        return "unknown key; remove it or check its spelling"
    if kind == "missing":
        return "required key is missing"
    message = message.removeprefix("Value error, ")
    value = error.get("input")
    if isinstance(value, str | int | float | bool) and kind not in ("value_error",):
        message += f" (got {redact(repr(value))[:80]})"
    return message


def read_yaml(path: Path) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """The file's data and the line of every key path.

    Raises:
        ConfigError: unreadable file or invalid YAML, with its line.
    """
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror})") from e
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}") from e
    lines: dict[tuple[Any, ...], int] = {}
    if node is not None:
        _line_index(node, (), lines)
    return data, lines
