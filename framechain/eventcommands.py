"""The commands that read what the chain produced: ``events`` and ``report``
over the event store, and ``schema``, the events' JSON Schema (or the HTTP
API's reference)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pipeline.errors import FramechainError


def _registry(source: str | None) -> Any:
    """The kinds of a config (the built-in ones and its plugins'), or the
    built-in ones when ``source`` is not a config."""
    from framechain.app import builtin_registry, load

    if source is not None and source.endswith((".yaml", ".yml")):
        return load(source).registry
    return builtin_registry()


def cmd_schema(args: argparse.Namespace) -> int:
    from pipeline.eventschema import render_json_schema

    kinds = _registry(args.config).events.all()
    if args.api:
        from stages.api.apidoc import openapi_document, render_markdown

        sys.stdout.write(render_markdown(openapi_document([k.name for k in kinds])))
        return 0
    sys.stdout.write(render_json_schema(kinds))
    return 0


def _event_query(args: argparse.Namespace) -> Any:
    from stages.sinks.eventstore import Query, parse_time

    return Query(
        cameras=args.camera or (),
        rules=getattr(args, "rule", None) or (),
        kinds=getattr(args, "kind", None) or (),
        since=parse_time(args.since) if args.since else None,
        until=parse_time(args.until) if args.until else None,
        limit=getattr(args, "limit", None),
    )


def _store_path(source: str) -> Path:
    """The event database: a ``.db`` file, or the first sqlite sink of a config.

    Raises:
        FramechainError / ConfigError: no such file, or a config without one.
    """
    path = Path(source)
    if path.suffix in (".yaml", ".yml"):
        from framechain.app import load

        stores = [s for s in load(source).config.sinks if s.kind == "sqlite"]
        if not stores:
            raise FramechainError(
                f"{source} has no sqlite sink; give the event database path instead"
            )
        path = Path(stores[0].path)
    if not path.is_file():
        raise FramechainError(
            f"no event store at {path}; run the chain first or give the right path"
        )
    return path


def cmd_events(args: argparse.Namespace) -> int:
    from stages.sinks.eventstore import query, render, unknown_filter

    path, chosen = _store_path(args.source), _event_query(args)
    rows = query(path, chosen)
    if not rows and (why := unknown_filter(path, chosen)):
        raise FramechainError(why)
    sys.stdout.write(render(rows, args.format))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from framechain.report import draw_report
    from stages.sinks.eventstore import query

    path = _store_path(args.source)
    rows = query(path, _event_query(args))
    title = f"framechain: {path.name}"
    kinds = _registry(args.source).events.all()
    drawn = draw_report(rows, Path(args.out), title, kinds, args.bucket)
    print(
        f"{args.out}: {drawn['events']} events, {len(drawn['lines'])} count series, "
        f"{len(drawn['zones'])} level series, {drawn['bucket_s']:g} s buckets"
    )
    return 0
