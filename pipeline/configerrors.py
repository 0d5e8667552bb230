"""Pydantic's validation errors turned into what an operator can act on: one line per
cause, ``path (line N): message``.

Pydantic reports one error per failed alternative and per list item, and a misspelt
key twice (the unknown key, then the key it meant as missing); here those collapse
into one line, an unknown key gets "did you mean" (and the invisible or look-alike
character that made it unknown), and a wrong ``kind`` lists the kinds there are.
"""

from __future__ import annotations

import difflib
import re
import types
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

from pipeline.log import redact
from pipeline.yamlmap import Lines, display, format_problem

# steps pydantic adds for the alternatives of a union: "int", "list[str]", ...
_UNION_STEP = re.compile(r"^(int|float|str|bool|bytes|none)$|\[")


def _unwrap(annotation: Any, node: Any) -> Any:
    """The type a value of ``annotation`` has, for a data ``node``: Annotated and
    Optional stripped, a union of models narrowed by the node's ``kind``."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        members = [_unwrap(a, node) for a in members]
        models = [
            m for m in members if isinstance(m, type) and issubclass(m, BaseModel)
        ]
        kind = node.get("kind") if isinstance(node, dict) else None
        for model in models:
            field = model.model_fields.get("kind")
            if field is not None and kind in get_args(field.annotation):
                return model
        return members[0] if len(members) == 1 else None
    return annotation


def keys_at(root: type[BaseModel], loc: Sequence[Any], data: Any) -> list[str]:
    """The keys the model allows at ``loc`` (empty when it is not a model there)."""
    annotation: Any = root
    node = data
    for step in loc:
        annotation = _unwrap(annotation, node)
        origin = get_origin(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if step not in annotation.model_fields:
                if isinstance(node, dict) and node.get("kind") == step:
                    continue  # a discriminated union's tag
                return []
            annotation = annotation.model_fields[step].annotation
        elif origin is dict:
            annotation = get_args(annotation)[1]
        elif origin in (list, tuple):
            annotation = get_args(annotation)[0]
        elif isinstance(step, str) and _UNION_STEP.search(step):
            continue
        else:
            return []
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            node = None
    annotation = _unwrap(annotation, node)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _odd_characters(key: str) -> str:
    odd = [c for c in key if not (c.isascii() and c.isprintable())]
    if not odd:
        return ""
    names = ", ".join(
        f"U+{ord(c):04X} {unicodedata.name(c, 'unnamed')}" for c in dict.fromkeys(odd)
    )
    return f"; it holds {names}"


def _suggest(word: str, choices: Sequence[str]) -> str | None:
    clean = unicodedata.normalize("NFKD", word)
    clean = "".join(c for c in clean if c.isascii() and c.isprintable())
    for candidate in (clean, word):
        match = difflib.get_close_matches(candidate, list(choices), n=1, cutoff=0.6)
        if match:
            return match[0]
    return None


def _tags(error: Mapping[str, Any]) -> list[str]:
    return re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected_tags", "")))


def _message(error: Mapping[str, Any], near: str | None) -> str:
    """``near``: for an unknown key, the key it most likely stands for."""
    kind, message = str(error["type"]), str(error["msg"])
    if kind == "extra_forbidden":
        key = str(error["loc"][-1])
        hint = (
            f"; did you mean {near!r}?" if near else "; remove it or check its spelling"
        )
        return f"unknown key {key!r}{_odd_characters(key)}{hint}"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        tag, tags = str(error.get("ctx", {}).get("tag", "")), _tags(error)
        near = _suggest(tag, tags)
        hint = f"did you mean {near!r}? " if near else ""
        return f"unknown kind {tag!r}; {hint}the kinds are {', '.join(tags)}"
    if kind == "union_tag_not_found":
        return f"needs a kind: one of {', '.join(_tags(error))}"
    message = message.removeprefix("Value error, ")
    value = error.get("input")
    if isinstance(value, str | int | float | bool) and kind != "value_error":
        message += f" (got {redact(repr(value))[:80]})"
    return message


def problems(error: Any, root: type[BaseModel], data: Any, lines: Lines) -> list[str]:
    """One ``path (line N): message`` per cause in a pydantic ``ValidationError``."""
    errors = list(error.errors())
    meant: set[tuple[Any, ...]] = set()  # missing keys an unknown key stands for
    messages: list[tuple[tuple[Any, ...], str, str]] = []
    for err in errors:
        loc = tuple(err["loc"])
        near = None
        if err["type"] == "extra_forbidden":
            near = _suggest(str(loc[-1]), keys_at(root, loc[:-1], data))
            if near is not None:
                meant.add((*loc[:-1], near))
        if str(err["type"]).startswith("union_tag"):
            loc = (*loc, "kind")
        messages.append((loc, str(err["type"]), _message(err, near)))
    # one line per place, and one per cause repeated over list items
    by_place: dict[tuple[str, int | None], list[str]] = {}
    repeats: dict[tuple[str, str], tuple[str, int | None]] = {}
    counts: dict[tuple[str, int | None], int] = {}
    for loc, kind, message in messages:
        if message == "required key is missing" and loc in meant:
            continue
        place = display(_data_steps(loc, data), lines, data)
        shape = (re.sub(r"\[\d+\]", "[]", place[0]), kind)
        if shape in repeats and repeats[shape] != place:
            counts[repeats[shape]] = counts.get(repeats[shape], 0) + 1
            continue
        repeats[shape] = place
        found = by_place.setdefault(place, [])
        if message not in found:
            found.append(message)
    out = []
    for place, found in by_place.items():
        text = found[0] + "".join(
            f" or {m.removeprefix('Input should be ')}" for m in found[1:]
        )
        if counts.get(place):
            text += f" (and {counts[place]} more like it)"
        out.append(format_problem(*place, text))
    return out


def _data_steps(loc: tuple[Any, ...], data: Any) -> tuple[Any, ...]:
    """``loc`` without the steps pydantic adds for a union's alternatives."""
    steps: list[Any] = []
    node = data
    for step in loc:
        if (
            isinstance(step, str)
            and _UNION_STEP.search(step)
            and not (isinstance(node, dict) and step in node)
        ):
            continue
        steps.append(step)
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            node = None
    return tuple(steps)
