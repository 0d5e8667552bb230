"""``docs/api.md``, rendered from the API's own OpenAPI document, so that the
reference never says what the service does not do (``framechain schema --api``;
a test keeps the committed file equal to it)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

INTRO = """\
# The HTTP API

Generated from the service's OpenAPI document by `framechain schema --api`; do not
edit by hand. The service itself serves the same document at `/openapi.json`.

Turn it on with
`http: {listen: "0.0.0.0:9410", api: true, token: "${FRAMECHAIN_TOKEN}"}`. Beyond
loopback every path but `/healthz` wants `Authorization: Bearer <token>` (or the
token as the password of HTTP basic) and answers 401 without it. Errors are JSON
`{"detail": "..."}`: one line naming what was wrong and what is known instead.
"""


def openapi_document(event_kinds: Sequence[str]) -> dict[str, Any]:
    """The OpenAPI document of an API with these event kinds (no store, no
    chain: only the routes and their types are read)."""
    import tempfile

    from pipeline.demand import Demand
    from pipeline.settings import PreviewConfig
    from stages.api.app import ApiSettings, build_app
    from stages.api.cameras import CameraBoard
    from stages.api.live import LivePictures

    settings = ApiSettings(
        store=Path("events.db"),
        board=CameraBoard(lambda: None, {}, {}),
        process_kinds={},
        event_kinds=tuple(event_kinds),
        directional=(),
        config={},
        metrics=lambda: b"",
        live=LivePictures(
            Demand(Path(tempfile.gettempdir()), "preview"), PreviewConfig()
        ),
        snapshot_dirs={},
    )
    document: dict[str, Any] = build_app(settings).app.openapi()
    return document


def render_markdown(document: dict[str, Any]) -> str:
    out = [INTRO]
    schemas = document.get("components", {}).get("schemas", {})
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            out.append(f"\n## {method.upper()} `{path}`\n")
            text = operation.get("description") or operation.get("summary", "")
            out.append(" ".join(text.split()) + "\n")
            params = operation.get("parameters", [])
            if params:
                out.append("\n| parameter | in | type | description |")
                out.append("|---|---|---|---|")
                for p in params:
                    kind = _type(p.get("schema", {}))
                    need = "" if p.get("required") else ", optional"
                    about = (
                        p.get("description")
                        or p.get("schema", {}).get("description", "")
                    ).replace("|", "\\|")
                    out.append(
                        f"| `{p['name']}` | {p['in']} | {kind}{need} | {about} |"
                    )
            body = operation.get("requestBody")
            if body:
                for media, content in body.get("content", {}).items():
                    out.append(
                        f"\nBody: `{media}`, {_type(content.get('schema', {}))}."
                    )
            out.append("\n| answer | content | what |")
            out.append("|---|---|---|")
            for status, answer in operation.get("responses", {}).items():
                contents = answer.get("content", {}) or {"": {}}
                for media, content in contents.items():
                    kind = _type(content.get("schema", {})) if media else ""
                    what = answer.get("description", "").replace("|", "\\|")
                    shown = f"`{media}` {kind}".strip() if media else ""
                    out.append(f"| {status} | {shown} | {what} |")
    out.append("\n## Types\n")
    for name, schema in schemas.items():
        out.append(f"\n### {name}\n")
        if schema.get("description"):
            out.append(" ".join(schema["description"].split()) + "\n")
        fields = schema.get("properties", {})
        if fields:
            out.append("\n| field | type | description |")
            out.append("|---|---|---|")
            for field, spec in fields.items():
                about = " ".join(spec.get("description", "").split())
                about = about.replace("|", "\\|")
                out.append(f"| `{field}` | {_type(spec)} | {about} |")
    return "\n".join(out) + "\n"


def _type(schema: dict[str, Any]) -> str:
    """A schema in a few words: string, array of integer, Event, string or null."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[1]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " or ".join(_type(s) for s in schema[key])
    kind = schema.get("type")
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if "enum" in schema:
        return " \\| ".join(json.dumps(v) for v in schema["enum"])
    if kind == "object" and "additionalProperties" in schema:
        extra = schema["additionalProperties"]
        inner = _type(extra) if isinstance(extra, dict) and extra else "any"
        return f"object of {inner}"
    return str(kind or "any")
