"""``PUT /api/cameras/{cam}/rules``: a camera's rules replaced over HTTP.

The new rules are validated as the config file would be (the same one-line
messages, naming the field; 422 and nothing changed when they fail), then
written back into the config file atomically with a round-trip YAML library,
keeping its comments, order and layout, where the chain's config watch (or the
next SIGHUP) applies them with tracks kept, as for a hand edit.

Cross-site safe: the request must be ``application/json`` (a page elsewhere
cannot send that without a CORS preflight, which this API never grants) and an
``Origin``, when a browser sends one, must be this service's own.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel

from pipeline.errors import ConfigError, FramechainError
from stages.api.models import Problem, problem
from stages.api.redact import redact

if TYPE_CHECKING:
    from stages.api.app import ApiSettings


class WrittenRules(BaseModel):
    """The camera's rules as its config file writes them."""

    camera: str
    rules: list[dict[str, Any]]


class RulesAnswer(BaseModel):
    """The camera's rules as the config now holds them, defaults filled in."""

    camera: str
    rules: list[dict[str, Any]]
    applied: str


def add_rule_routes(
    app: FastAPI, settings: ApiSettings, errors: dict[int | str, dict[str, Any]]
) -> None:
    lock = threading.Lock()  # one edit of the file at a time

    @app.get(
        "/api/cameras/{name}/rules",
        response_model=WrittenRules,
        responses=errors,
    )
    def get_rules(name: str) -> Response:
        """The camera's rules as the config file writes them (no defaults
        filled in): what a rule editor changes and PUTs back."""
        if name not in settings.board.names():
            return problem(
                404,
                f"no camera {name!r}; known: {', '.join(settings.board.names())}",
            )
        if settings.config_path is None:
            return problem(503, "this API was started without its config file")
        try:
            rules = written_rules(settings.config_path, name)
        except (OSError, ValueError) as e:
            return problem(503, f"cannot read {settings.config_path.name}: {e}")
        body = WrittenRules(camera=name, rules=rules)
        return Response(body.model_dump_json(), media_type="application/json")

    @app.put(
        "/api/cameras/{name}/rules",
        response_model=RulesAnswer,
        responses={
            403: {"model": Problem},
            415: {"model": Problem},
            **errors,
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "description": "The camera's rules, as under cameras.<name>.rules "
                "in the config (each with its kind).",
                "content": {
                    "application/json": {
                        "schema": {"type": "array", "items": {"type": "object"}}
                    }
                },
            }
        },
    )
    async def put_rules(name: str, request: Request) -> Response:
        """Replace one camera's rules: validated, written into the config file
        (comments kept), applied by the chain's reload with tracks kept."""
        # before the body is read: what a page on another site could send
        refusal = _cross_site(request)
        if refusal is not None:
            return refusal
        if name not in settings.board.names():
            return problem(
                404,
                f"no camera {name!r}; known: {', '.join(settings.board.names())}",
            )
        try:
            rules = json.loads(await request.body(), parse_constant=_no_constant)
        except (ValueError, RecursionError):
            return problem(422, "the body is not JSON: send a list of rules")
        if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
            return problem(422, "send a list of rules, each an object with its kind")
        return await asyncio.to_thread(_replace, name, rules)

    def _replace(name: str, rules: list[dict[str, Any]]) -> Response:
        if settings.config_path is None or settings.registry is None:
            return problem(503, "this API was started without its config file")
        with lock:
            try:
                loaded = _write_rules(
                    settings.config_path, settings.registry, name, rules
                )
            except ConfigError as e:
                return problem(422, str(e).splitlines()[0])
            except RecursionError:
                return problem(422, "the rules are nested too deeply to be rules")
            except (OSError, FramechainError) as e:
                return problem(503, f"cannot write {settings.config_path.name}: {e}")
        camera = loaded.config.cameras[name]
        settings.board.rules[name] = [(r.name, r.kind) for r in camera.rules]
        settings.config = redact(loaded.config.model_dump(mode="json"))
        watching = loaded.config.supervisor.watch_config
        body = RulesAnswer(
            camera=name,
            rules=[r.model_dump(mode="json") for r in camera.rules],
            applied="on the chain's next frames (the config watch reloads them)"
            if watching
            else "at the next SIGHUP (supervisor.watch_config is off)",
        )
        return Response(body.model_dump_json(), media_type="application/json")


def _no_constant(name: str) -> Any:
    """NaN and Infinity are not JSON, and no place for a rule's numbers."""
    raise ValueError(f"{name} is not a number a rule can hold")


def _cross_site(request: Request) -> Response | None:
    """403 or 415 for what a page on another site could send."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        return problem(415, "send the rules as JSON (Content-Type: application/json)")
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        return problem(403, f"a request from {origin} is refused: another site")
    return None


def _write_rules(path: Path, registry: Any, camera: str, rules: list[Any]) -> Any:
    """The config file with ``camera``'s rules replaced, validated, then put in
    place atomically; its ``LoadedConfig``.

    Raises:
        ConfigError: the rules (or the file as it now is) do not validate.
        OSError: it cannot be read or written.
    """
    from ruamel.yaml import YAML

    from pipeline.config import load_config

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # lines stay as they were written, not re-wrapped
    yaml.indent(mapping=2, sequence=4, offset=2)  # lists indented under their key
    document = yaml.load(path.read_text())
    section = document["cameras"][camera]
    section["rules"] = _merged_rules(section.get("rules"), rules)
    text = io.StringIO()
    yaml.dump(document, text)
    # beside it, so relative paths in it mean the same while it is checked
    candidate = path.with_name(f".{path.name}.{os.getpid()}.candidate")
    candidate.write_text(text.getvalue())
    try:
        loaded = load_config(candidate, registry)
        os.chmod(candidate, path.stat().st_mode & 0o7777)
        os.replace(candidate, path)
    finally:
        candidate.unlink(missing_ok=True)
    return loaded


def written_rules(path: Path, camera: str) -> list[Any]:
    """The camera's rules as the config file writes them (no defaults filled in):
    what an editor changes and sends back."""
    import yaml

    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(str(e).splitlines()[0]) from None
    section = (document.get("cameras") or {}).get(camera) or {}
    rules = section.get("rules") or []
    return rules if isinstance(rules, list) else []


def _merged_rules(old: Any, new: list[Any]) -> Any:
    """The new rules, each written over the file's rule of the same name where
    there is one, so what the file says of its own about a rule (its comments,
    its layout, its keys' order) stays wherever the rule did not change."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    existing = {
        rule.get("name"): rule
        for rule in (old if isinstance(old, list) else [])
        if isinstance(rule, CommentedMap)
    }
    return CommentedSeq(
        _merged(existing.pop(rule["name"]), rule)
        if rule.get("name") in existing
        else _flow_points(rule)
        for rule in new
    )


def _merged(old: Any, new: Any) -> Any:
    from ruamel.yaml.comments import CommentedMap

    if isinstance(old, CommentedMap) and isinstance(new, dict):
        for key in [k for k in old if k not in new]:
            del old[key]
        for key, value in new.items():
            old[key] = _merged(old[key], value) if key in old else _flow_points(value)
        return old
    if type(old) is not bool and type(new) is not bool and old == new:
        return old  # as the file wrote it: its quotes, its flow style
    return _flow_points(new)


def _flow_points(value: Any) -> Any:
    """Points and short lists of numbers written inline ([0, 300]), as people
    write them, not one number per line."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(value, dict):
        mapping = CommentedMap()
        for key, item in value.items():
            mapping[key] = _flow_points(item)
        return mapping
    if isinstance(value, list):
        seq = CommentedSeq(_flow_points(v) for v in value)
        if all(not isinstance(v, dict) for v in value):
            seq.fa.set_flow_style()
        return seq
    return value
