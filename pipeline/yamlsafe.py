"""Reading a config file an attacker or a tired operator may have written.

PyYAML composes a document into a node graph in time linear in its text; what blows up
is *expanding* that graph, where an alias is a pointer that can be followed many
times (a "billion laughs" document is a few hundred bytes whose expansion has 10^9
values) or back into itself. So the graph is composed by PyYAML and turned into data
here, by one walk that counts every value it produces, bounds the nesting depth,
refuses an alias that contains itself and refuses a key given twice in one mapping
(PyYAML lets the last one win silently). The same walk records the line of every key
for error messages. The bytes are checked first: UTF-8 only, no byte-order mark, no
NUL or control characters, each refused with the line it is on.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigError

MAX_VALUES = 100_000  # a 64-camera config with 100-vertex zones needs ~40 000
MAX_DEPTH = 40
MAX_BYTES = 4 << 20
MAX_INTEGER = 2**53  # beyond it a number is not exact as a float either

_BOMS = (
    (b"\xef\xbb\xbf", "UTF-8"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\xfe\xff", "UTF-16"),
    (b"\xff\xfe", "UTF-16"),
)
# YAML's printable set, minus what the reader would refuse with a multi-line message
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff\ud800-\udfff]")
_MERGE = "tag:yaml.org,2002:merge"
_SEQUENCE = "tag:yaml.org,2002:seq"
_MAPPING = "tag:yaml.org,2002:map"

Lines = dict[tuple[Any, ...], int]


def _text(path: Path, raw: bytes) -> str:
    """The file's text, or one line saying why it is not a config's text."""
    for bom, name in _BOMS:
        if raw.startswith(bom):
            raise ConfigError(
                f"{path} (line 1): the file starts with a {name} byte-order mark; "
                "save it as UTF-8 without a BOM"
            )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(
            f"{path} (line {line}): not UTF-8 text (byte 0x{raw[e.start]:02x} at "
            f"offset {e.start}); a config is a YAML text file saved as UTF-8"
        ) from None
    bad = _FORBIDDEN.search(text)
    if bad is not None:
        line = text.count("\n", 0, bad.start()) + 1
        what = "a NUL byte" if bad.group() == "\0" else f"U+{ord(bad.group()):04X}"
        raise ConfigError(
            f"{path} (line {line}): the file holds {what}, which a text config "
            "cannot; is it UTF-16 or a binary file? save it as UTF-8 text"
        )
    return text


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class _Builder:
    """Turns a composed node graph into plain data within the bounds above."""

    def __init__(self, path: Path, loader: yaml.SafeLoader) -> None:
        self.path = path
        self.loader = loader
        self.values = 0
        self.open: set[int] = set()  # nodes being expanded: an alias to one is a loop
        self.lines: Lines = {}

    def fail(self, node: yaml.Node, message: str) -> ConfigError:
        return ConfigError(f"{self.path} (line {node.start_mark.line + 1}): {message}")

    def build(self, node: yaml.Node, where: tuple[Any, ...]) -> Any:
        self.values += 1
        if self.values > MAX_VALUES:
            raise self.fail(
                node,
                f"the document expands to more than {MAX_VALUES} values (an alias "
                "bomb?); write the values out instead of repeating aliases",
            )
        if len(where) > MAX_DEPTH:
            raise self.fail(node, f"nested deeper than {MAX_DEPTH} levels")
        self.lines.setdefault(where, node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            value = self.loader.construct_object(node)
            if isinstance(value, int) and abs(value) > MAX_INTEGER:
                raise self.fail(node, f"the number {str(value)[:20]}… is out of range")
            return value
        if node.tag not in (_SEQUENCE, _MAPPING):
            raise self.fail(node, f"the tag {node.tag} is not allowed in a config")
        if id(node) in self.open:
            raise self.fail(node, "an alias refers to the value that contains it")
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [
                    self.build(item, (*where, i)) for i, item in enumerate(node.value)
                ]
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, where)
            raise self.fail(node, f"unsupported YAML node {type(node).__name__}")
        finally:
            self.open.discard(id(node))

    def _mapping(
        self, node: yaml.MappingNode, where: tuple[Any, ...]
    ) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        first_line: dict[Any, int] = {}
        merged: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                merged.update(self._merge(value_node, where))
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(
                    key_node, "a key must be a plain name, not a list or map"
                )
            key = self.loader.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in first_line:
                name = f"{'.'.join(map(str, (*where, key)))}"
                raise ConfigError(
                    f"{self.path} (line {line}): {name} is given twice (lines "
                    f"{first_line[key]} and {line}); keep one"
                )
            first_line[key] = line
            self.lines[(*where, key)] = line
            result[key] = self.build(value_node, (*where, key))
        return {**merged, **result}

    def _merge(self, node: yaml.Node, where: tuple[Any, ...]) -> dict[Any, Any]:
        """``<<: *base`` or ``<<: [*a, *b]``: earlier maps win, explicit keys win."""
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        merged: dict[Any, Any] = {}
        for source in reversed(sources):
            value = self.build(source, where)
            if not isinstance(value, dict):
                raise self.fail(source, "<< merges only maps")
            merged.update(value)
        return merged


def read_yaml(path: Path) -> tuple[Any, Lines]:
    """The file's data and the line of every key path.

    Raises:
        ConfigError: one line: unreadable file, not UTF-8 text, invalid YAML, an
            alias bomb or loop, a duplicate key.
    """
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror})") from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(
            f"{path}: the file is larger than {MAX_BYTES >> 20} MiB; is it a config?"
        )
    text = _text(path, raw)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        builder = _Builder(path, loader)
        return builder.build(node, ()), builder.lines
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(
            f"{path}{where}: invalid YAML: {_one_line(problem)}"
        ) from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to read") from None
    finally:
        loader.dispose()
