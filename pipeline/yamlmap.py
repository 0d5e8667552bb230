"""Positions out: a validation error's location turned into ``a.b[0].c`` and the
line of the YAML file it is on (``yamlsafe`` records the lines)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Lines = Mapping[tuple[Any, ...], int]


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
