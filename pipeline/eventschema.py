"""Everything derived from the ``Event`` struct: the SQLite columns of the event
store and the JSON Schema in ``docs/event.schema.json``. Nothing else lists the
event's fields (a test fails when the document and this generator disagree).

Run ``python -m pipeline.eventschema > docs/event.schema.json`` after changing
``Event``.
"""

from __future__ import annotations

import json
import sys
from typing import Any, get_type_hints

import msgspec

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

DATA_BY_KIND: list[dict[str, Any]] = json.loads(
    """
[
 {
  "if": {
   "properties": {
    "kind": {
     "const": "line_crossing"
    }
   }
  },
  "then": {
   "properties": {
    "direction": {
     "enum": [
      "in",
      "out"
     ]
    },
    "track_id": {
     "minimum": 0
    },
    "data": {
     "required": [
      "total_in",
      "total_out"
     ],
     "properties": {
      "total_in": {
       "type": "integer"
      },
      "total_out": {
       "type": "integer"
      }
     }
    }
   }
  }
 },
 {
  "if": {
   "properties": {
    "kind": {
     "const": "zone_occupancy"
    }
   }
  },
  "then": {
   "properties": {
    "data": {
     "required": [
      "by_class"
     ],
     "properties": {
      "by_class": {
       "type": "object",
       "additionalProperties": {
        "type": "integer"
       }
      }
     }
    }
   }
  }
 },
 {
  "if": {
   "properties": {
    "kind": {
     "enum": [
      "zone_enter",
      "zone_exit",
      "loitering"
     ]
    }
   }
  },
  "then": {
   "properties": {
    "track_id": {
     "minimum": 0
    },
    "data": {
     "required": [
      "at_pts"
     ],
     "properties": {
      "at_pts": {
       "type": "number"
      },
      "dwell_s": {
       "type": "number",
       "minimum": 0
      },
      "reason": {
       "enum": [
        "left",
        "lost"
       ]
      }
     }
    }
   }
  }
 },
 {
  "if": {
   "properties": {
    "kind": {
     "const": "zone_exit"
    }
   }
  },
  "then": {
   "properties": {
    "data": {
     "required": [
      "at_pts",
      "dwell_s",
      "reason"
     ]
    }
   }
  }
 },
 {
  "if": {
   "properties": {
    "kind": {
     "enum": [
      "crowd_start",
      "crowd_end"
     ]
    }
   }
  },
  "then": {
   "properties": {
    "data": {
     "required": [
      "since_pts",
      "peak",
      "duration_s"
     ]
    }
   }
  }
 },
 {
  "if": {
   "properties": {
    "kind": {
     "const": "counts"
    }
   }
  },
  "then": {
   "properties": {
    "rule": {
     "const": "aggregate"
    },
    "data": {
     "required": [
      "start",
      "end",
      "partial",
      "lines",
      "zones"
     ],
     "properties": {
      "start": {
       "type": "number"
      },
      "end": {
       "type": "number"
      },
      "partial": {
       "type": "boolean"
      },
      "lines": {
       "type": "object",
       "additionalProperties": {
        "type": "object",
        "additionalProperties": {
         "type": "object",
         "additionalProperties": {
          "type": "integer"
         }
        }
       }
      },
      "zones": {
       "type": "object",
       "additionalProperties": {
        "type": "object",
        "required": [
         "max",
         "mean"
        ]
       }
      }
     }
    }
   }
  }
 },
 {
  "if": {
   "properties": {
    "kind": {
     "enum": [
      "camera_online",
      "camera_offline"
     ]
    }
   }
  },
  "then": {
   "properties": {
    "rule": {
     "const": "camera"
    },
    "data": {
     "required": [
      "reason",
      "detail"
     ]
    }
   }
  }
 }
]
"""
)
"""What ``data`` holds for each kind (the part of the schema no field type says)."""


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


def json_schema() -> dict[str, Any]:
    """The JSON Schema of an event as sinks write it (an object, one key a field)."""
    hints = get_type_hints(Event, include_extras=True)
    properties = {
        field.name: msgspec.json.schema(hints[field.name]) for field in event_fields()
    }
    return {
        **SCHEMA_HEAD,
        "type": "object",
        "required": [f.name for f in event_fields()],
        "additionalProperties": False,
        "properties": properties,
        "allOf": DATA_BY_KIND,
    }


def render_json_schema() -> str:
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_json_schema())
