"""Everything derived from the ``Event`` struct and the registered event kinds:
the SQLite columns and per-kind views of the event store, and the JSON Schema in
``docs/event.schema.json``. Nothing else lists the event's fields or what each
kind's ``data`` holds (a test fails when the document and this generator
disagree).

Run ``framechain schema > docs/event.schema.json`` after changing ``Event`` or a
built-in kind (``framechain schema CONFIG`` adds the config's plugins' kinds).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, get_type_hints

import msgspec

from pipeline.eventkinds import EventKindSpec
from pipeline.messages import Event

_SQL_TYPES = {"str": "TEXT", "int": "INTEGER", "float": "REAL", "bool": "INTEGER"}

SCHEMA_HEAD: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://framechain.dev/schema/event.schema.json",
    "title": "framechain event",
    "description": "One analytics event, as stored by the sqlite and jsonl sinks, "
    'POSTed by the webhook sink (inside {"events": [...]}) and published by the '
    "MQTT sink on <prefix>/<camera>/events/<kind>. Events are immutable; event_id "
    "is stable, so consumers deduplicate by it.",
}
"""The document's own identity and summary."""


def event_fields() -> tuple[msgspec.inspect.Field, ...]:
    """The event's fields, in order."""
    info = msgspec.inspect.type_info(Event)
    assert isinstance(info, msgspec.inspect.StructType)
    return info.fields


def _sql_type(field: msgspec.inspect.Field) -> str:
    kind = field.type
    if isinstance(kind, msgspec.inspect.Metadata):
        kind = kind.type
    if isinstance(kind, msgspec.inspect.LiteralType | msgspec.inspect.StrType):
        return "TEXT"
    name = type(kind).__name__.removesuffix("Type").lower()
    return _SQL_TYPES.get(name, "TEXT")  # dict: JSON text


def _sql_default(field: msgspec.inspect.Field) -> str:
    if (
        field.default is msgspec.NODEFAULT
        and field.default_factory is msgspec.NODEFAULT
    ):
        return ""
    value = field.default if field.default is not msgspec.NODEFAULT else "{}"
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, str):
        value = "'" + value.replace("'", "''") + "'"
    return f" DEFAULT {value}"


def sql_columns() -> dict[str, str]:
    """Column name -> declaration; fields with a default get it as the column's
    default, so a store made by an older version gains new columns in place."""
    return {
        f.name: f"{_sql_type(f)} NOT NULL{_sql_default(f)}"
        + (" PRIMARY KEY" if f.name == "event_id" else "")
        for f in event_fields()
    }


def sqlite_schema() -> str:
    """The event store's tables and indexes."""
    columns = ",\n".join(f"    {name} {decl}" for name, decl in sql_columns().items())
    return (
        f"CREATE TABLE IF NOT EXISTS events (\n{columns}\n);\n"
        "CREATE INDEX IF NOT EXISTS events_by_stream "
        "ON events (stream_id, rule, seq);\n"
        "CREATE INDEX IF NOT EXISTS events_by_time ON events (capture_ts);\n"
        # the API's pages: newest first within a camera or a kind, and a track's
        # events (framechain bench api: p99 over 500 ms without them on 1M)
        "CREATE INDEX IF NOT EXISTS events_by_camera_time "
        "ON events (stream_id, capture_ts);\n"
        "CREATE INDEX IF NOT EXISTS events_by_kind_time ON events (kind, capture_ts);\n"
        "CREATE INDEX IF NOT EXISTS events_by_track ON events (track_id, stream_id);\n"
    )


def sql_insert() -> str:
    """The idempotent insert of one row: an id stored already is left as it is."""
    names = ", ".join(sql_columns())
    marks = ", ".join("?" * len(sql_columns()))
    return f"INSERT OR IGNORE INTO events ({names}) VALUES ({marks})"  # noqa: S608


def sql_row(event: Event) -> tuple[Any, ...]:
    """One event as a row of ``sql_columns()``: data as compact JSON, flags 0/1."""
    return tuple(
        json.dumps(v, separators=(",", ":"))
        if isinstance(v, dict)
        else int(v)
        if isinstance(v, bool)
        else v
        for v in msgspec.structs.astuple(event)
    )


def sqlite_views(kinds: Sequence[EventKindSpec]) -> str:
    """One view per event kind, ``events_<kind>``: the event's columns without
    ``data``, then each field of the kind's data as a column of its own, so an
    analyst's SQL needs no JSON functions (nested objects as JSON text).
    Dropped and made again at every open: a view holds no data, and the
    registered kinds may have changed. Names are safe to splice: kind names
    match ``KIND_PATTERN`` and field names are Python identifiers."""
    base = ", ".join(f'"{name}"' for name in sql_columns() if name != "data")
    statements = []
    for spec in kinds:
        info = msgspec.inspect.type_info(spec.data)
        assert isinstance(info, msgspec.inspect.StructType)
        # objects and lists come out as JSON text; a field named like a
        # column of the event is prefixed with data_
        own = [
            f"json_extract(data, '$.{f.encode_name}') AS "
            f'"{"data_" if f.encode_name in sql_columns() else ""}{f.encode_name}"'
            for f in info.fields
        ]
        view = f"events_{spec.name}"
        statements.append(
            f'DROP VIEW IF EXISTS "{view}";\n'  # noqa: S608
            f'CREATE VIEW "{view}" AS SELECT {", ".join([base, *own])} '
            f"FROM events WHERE kind = '{spec.name}';\n"
        )
    return "".join(statements)


def _kind_rule(spec: EventKindSpec, data_schema: dict[str, Any]) -> dict[str, Any]:
    """What an event of ``spec``'s kind holds beyond the fields' types."""
    then: dict[str, Any] = {"description": spec.description, "properties": {}}
    properties = then["properties"]
    if spec.rule is not None:
        properties["rule"] = {"const": spec.rule}
    if spec.tracked:
        properties["track_id"] = {"minimum": 0}
    if spec.directions:
        properties["direction"] = {"enum": list(spec.directions)}
    if spec.value:
        properties["value"] = {"description": spec.value}
    properties["data"] = data_schema
    return {
        "if": {"properties": {"kind": {"const": spec.name}}, "required": ["kind"]},
        "then": then,
    }


def json_schema(kinds: Sequence[EventKindSpec]) -> dict[str, Any]:
    """The JSON Schema of an event as sinks write it (an object, one key a
    field), and for each registered kind what its ``data`` and fields hold."""
    hints = get_type_hints(Event, include_extras=True)
    properties = {
        field.name: msgspec.json.schema(hints[field.name]) for field in event_fields()
    }
    data_schemas, definitions = msgspec.json.schema_components(
        [spec.data for spec in kinds], ref_template="#/$defs/{name}"
    )
    properties["kind"]["examples"] = [spec.name for spec in kinds]
    return {
        **SCHEMA_HEAD,
        "type": "object",
        "required": [f.name for f in event_fields()],
        "additionalProperties": False,
        "properties": properties,
        "allOf": [
            _kind_rule(spec, schema)
            for spec, schema in zip(kinds, data_schemas, strict=True)
        ],
        "$defs": definitions,
    }


def render_json_schema(kinds: Sequence[EventKindSpec]) -> str:
    return json.dumps(json_schema(kinds), indent=2, ensure_ascii=False) + "\n"
