"""The ``framechain`` command line (the only module that prints to the terminal
and turns errors into exit codes: 0 done, 1 failed, 2 invalid config)."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any, Literal

from framechain.eventcommands import cmd_events, cmd_report, cmd_schema
from framechain.rundir import claim, runtime_folder, sweep_runtime_folders
from pipeline.errors import ConfigError, FramechainError

log = logging.getLogger("framechain")

HELP = """Turns camera streams into analytics events: line crossings, zone visits,
crowds, counts. A chain of processes (capture, decode, detect, track, sinks) runs
from one YAML config; events go to SQLite, JSON Lines, MQTT or a webhook.

Exit status: 0 done, 1 failed, 2 invalid config."""

EXAMPLES = """examples:
  framechain run configs/demo.yaml              run a chain until its sources end
  framechain validate my.yaml                   check a config, one line per problem
  framechain events runs/demo/events.db --since 2h --kind line_crossing
  framechain report my.yaml --since 1d --out counts.png
  framechain schema > event.schema.json         what an event holds

docs: README.md, docs/events.md, docs/operations.md"""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"framechain {version('framechain')}"
    except PackageNotFoundError:
        return "framechain (not installed: run from a source tree)"


def _load(path: str) -> Any:
    from framechain.app import load

    return load(path)


def cmd_validate(args: argparse.Namespace) -> int:
    from framechain.plan import stage_names
    from stages.detect.kind import resolved_model

    loaded = _load(args.config)
    cfg = loaded.config
    model = resolved_model(loaded)
    print(
        f"{args.config}: OK: {len(cfg.cameras)} camera(s), {len(stage_names(loaded))} "
        f"stages, model {model.model_path} ({len(model.class_names)} classes)"
    )
    return 0


def cmd_stage(args: argparse.Namespace) -> int:
    from framechain.plan import build_plan
    from pipeline.bootstrap import bootstrap, die_with
    from pipeline.runtime import run_stage

    if args.supervisor_pid is not None:  # first, so an early death also ends us
        die_with(args.supervisor_pid)
    loaded = _load(args.config)
    runtime_dir, _ = runtime_folder(loaded, args.runtime_dir)
    try:
        plan = build_plan(loaded, args.name, runtime_dir)
    except KeyError as e:
        raise ConfigError(str(e.args[0])) from None
    bootstrap(args.name, loaded.config.log_level, loaded.config.log_format)
    return run_stage(plan, args.control)


def cmd_run(args: argparse.Namespace) -> int:
    from framechain.app import supervisor_for
    from framechain.summary import Progress, print_summary, problems
    from pipeline.log import setup_logging
    from pipeline.observability import HealthServer
    from pipeline.shm import remove_orphan_rings, remove_stale_rings, ring_prefix

    loaded = _load(args.config)
    setup_logging("supervisor", loaded.config.log_level, loaded.config.log_format)
    remove_orphan_rings()
    sweep_runtime_folders()
    runtime_dir, temporary = runtime_folder(loaded, args.runtime_dir)
    if temporary:
        claim(runtime_dir)
    kinds = loaded.registry.process_kinds(loaded.config)
    supervisor = supervisor_for(loaded, runtime_dir)
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    signal.signal(signal.SIGHUP, supervisor.request_reload)
    health = None
    # with the API on, its service serves health and metrics on the one port
    if loaded.config.http.listen and not loaded.config.http.api:
        health = HealthServer(loaded.config.http.listen, supervisor.snapshot, kinds)
        health.start()
    progress = Progress(enabled=not args.no_progress, kinds=kinds)
    try:
        code = supervisor.run(on_tick=progress.update)
    finally:
        progress.close()
        if health is not None:
            health.close()
        remove_stale_rings(ring_prefix(runtime_dir))
        if temporary:
            shutil.rmtree(runtime_dir, ignore_errors=True)
    print_summary(loaded, supervisor, kinds, file=sys.stdout)
    sys.stdout.flush()
    for line in problems(loaded, supervisor):
        print(f"framechain: warning: {line}", file=sys.stderr)
    if supervisor.failure:
        print(f"framechain: {supervisor.failure}", file=sys.stderr)
    return code


def cmd_keys(args: argparse.Namespace) -> int:
    """A CURVE keypair for one host: NAME.key (public, give it to peers) and
    NAME.key_secret (private, keep it on this host, mode 0600)."""
    import zmq.auth

    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    public, secret = (
        directory / f"{args.name}.key",
        directory / f"{args.name}.key_secret",
    )
    if public.exists() or secret.exists():
        raise FramechainError(
            f"{public} or {secret} exists already; remove them or choose another name"
        )
    public_file, secret_file = zmq.auth.create_certificates(directory, args.name)
    Path(secret_file).chmod(0o600)
    print(f"public key: {public_file}\nsecret key: {secret_file}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    import msgspec

    from framechain.replay import replay_events

    loaded = _load(args.config)
    stats: dict[str, Any] = {}
    encoder = msgspec.json.Encoder()
    out = Path(args.out).open("wb") if args.out else sys.stdout.buffer
    try:
        for event in replay_events(loaded, args.camera, Path(args.recording), stats):
            out.write(encoder.encode(msgspec.structs.asdict(event)) + b"\n")
    finally:
        if args.out:
            out.close()
        else:
            out.flush()
    rate = stats["frames"] / stats["seconds"] if stats.get("seconds") else 0.0
    print(
        f"replayed {stats['frames']} frames into {stats['events']} events; "
        f"tracking and rules at {rate:.0f} frames/s",
        file=sys.stderr,
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from stages.detect.export import compile_model
    from stages.detect.modelcache import CompileSpec, default_cache_dir
    from stages.detect.models import model_directories, resolve_model

    source = resolve_model(args.model, model_directories(None, os.environ, Path.cwd()))
    precision: Literal["fp32", "fp16", "int8"] = (
        "int8" if args.int8 else "fp16" if args.half else "fp32"
    )
    spec = CompileSpec(
        format=args.format,
        imgsz=args.imgsz,
        batch=args.batch,
        dynamic=not args.static,
        precision=precision,
        calibration=str(Path(args.data).resolve()) if args.data else None,
    )
    if args.int8 and not args.data:
        raise ConfigError("--int8 needs --data FOLDER of calibration images")
    cache = Path(args.cache) if args.cache else default_cache_dir()
    entry, drift = compile_model(source, spec, cache, args.max_drift)
    result = entry.path
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        name = source.stem + {"onnx": ".onnx", "engine": ".engine"}.get(
            args.format,
            f"_{precision}_openvino_model" if args.int8 else "_openvino_model",
        )
        result = out / name
        if result.is_dir():
            shutil.rmtree(result)
        if entry.path.is_dir():
            shutil.copytree(entry.path, result)
        else:
            shutil.copy2(entry.path, result)
    state = f"built ({entry.reason})" if entry.built else "reused from the cache"
    print(f"{result}: {args.format} {precision}, {state}, key {entry.key}")
    if drift is not None:
        print(f"int8 accepted: {drift.describe()}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """The benchmarks live in their own package, imported only here; they parse
    their own arguments."""
    from benchmarks.bench import add_arguments, run_bench

    parser = argparse.ArgumentParser(prog="framechain bench")
    add_arguments(parser)
    return run_bench(parser.parse_args(args.bench_args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="framechain",
        description=HELP,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the whole chain under the supervisor")
    run.add_argument("config")
    run.add_argument("--runtime-dir", help="folder for ipc:// sockets")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_run)

    stage = sub.add_parser("stage", help="run one stage process (systemd, other hosts)")
    stage.add_argument(
        "name", help="e.g. capture.cam1, decode.cam1, detect, track.cam1"
    )
    stage.add_argument("--config", required=True)
    stage.add_argument("--runtime-dir", help="folder for ipc:// sockets")
    stage.add_argument("--control", help="supervisor control URI (heartbeats)")
    stage.add_argument(
        "--supervisor-pid", type=int, help="exit when this process ends (supervisor)"
    )
    stage.set_defaults(func=cmd_stage)

    validate = sub.add_parser("validate", help="check a config; exit 2 if invalid")
    validate.add_argument("config")
    validate.set_defaults(func=cmd_validate)

    def selection(command: argparse.ArgumentParser) -> None:
        command.add_argument("source", help="event database (.db) or config (.yaml)")
        command.add_argument("--camera", action="append", help="repeatable")
        command.add_argument("--since", help="ISO time, Unix time or 15m / 2h / 7d")
        command.add_argument("--until", help="same forms as --since")

    schema = sub.add_parser(
        "schema", help="JSON Schema of events (docs/event.schema.json)"
    )
    schema.add_argument(
        "config", nargs="?", help="add the event kinds of this config's plugins"
    )
    schema.add_argument(
        "--api",
        action="store_true",
        help="the HTTP API's reference in Markdown instead (docs/api.md)",
    )
    schema.set_defaults(func=cmd_schema)

    events = sub.add_parser("events", help="query stored events")
    selection(events)
    events.add_argument("--rule", action="append", help="repeatable")
    events.add_argument("--kind", action="append", help="e.g. line_crossing")
    events.add_argument("--limit", type=int)
    events.add_argument("--format", choices=("table", "json", "csv"), default="table")
    events.set_defaults(func=cmd_events)

    report = sub.add_parser("report", help="PNG chart of counts and occupancy")
    selection(report)
    report.add_argument("--out", default="report.png", help="PNG file to write")
    report.add_argument("--bucket", type=float, help="seconds per bar (default: auto)")
    report.set_defaults(func=cmd_report)

    replay = sub.add_parser(
        "replay", help="track and rules on a recording (links.record), no detector"
    )
    replay.add_argument("recording", help="file written by links.record")
    replay.add_argument("--config", required=True, help="rules and tracker settings")
    replay.add_argument("--camera", help="needed when the config has several")
    replay.add_argument("--out", help="events as JSON Lines (default: stdout)")
    replay.set_defaults(func=cmd_replay)

    keys = sub.add_parser("keys", help="create a CURVE keypair for tcp:// links")
    keys.add_argument("name", help="host or stage name, e.g. edge-01")
    keys.add_argument("--dir", default=".", help="where to write NAME.key(_secret)")
    keys.set_defaults(func=cmd_keys)

    export = sub.add_parser(
        "export", help="compile a .pt to onnx / openvino / TensorRT, through the cache"
    )
    export.add_argument("model", help="an Ultralytics .pt (name or path)")
    export.add_argument(
        "--format", choices=("onnx", "openvino", "engine"), default="onnx"
    )
    export.add_argument("--imgsz", type=int, default=640)
    export.add_argument("--batch", type=int, default=1, help="(largest) batch")
    export.add_argument("--static", action="store_true", help="fixed batch and size")
    export.add_argument("--half", action="store_true", help="fp16")
    export.add_argument("--int8", action="store_true", help="int8 (needs --data)")
    export.add_argument("--data", help="folder of calibration images for int8")
    export.add_argument(
        "--max-drift",
        type=float,
        default=0.1,
        help="refuse an int8 build whose detections drift more than this (1 − F1)",
    )
    export.add_argument("--cache", help="model cache folder (FRAMECHAIN_CACHE)")
    export.add_argument("--out", help="also copy the result into this folder")
    export.set_defaults(func=cmd_export)

    bench = sub.add_parser(
        "bench",
        help="runtime limit vs Ultralytics vs framechain (framechain bench --help)",
        add_help=False,
    )
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "bench":
        args.bench_args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args))
    except ConfigError as e:
        for line in e.lines:
            print(f"error: {line}", file=sys.stderr)
        return 2
    except FramechainError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if args.debug or os.environ.get("FRAMECHAIN_DEBUG"):
            raise
        print(
            f"error: unexpected {type(e).__name__}: {e} (run with --debug for the "
            "traceback, and please report it)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
