"""``framechain bench api``: what the HTTP API's clients cost the chain, and how
fast the API answers on a large store.

(a) Eight cameras on the clip, each run to its end as fast as the detector takes
    the frames, with the API on: once with no client, once with four clients
    each watching every camera's live picture (``stream.mjpeg``) and polling
    ``/api/events`` every second. Runs alternate; the throughput (frames tracked
    per second, all cameras) is compared by its median, as a ratio.
(b) ``/api/events`` on a store of one million generated events, answered by the
    API alone: p50 and p99 of each kind of page a console asks for.

``--repeats 0`` measures (b) alone. The clients run in a process of their own
(``--clients``) at the lowest CPU priority, standing for browsers on other
machines: what (a) shows is what serving them costs this box. The API service
itself runs below the chain (``supervisor.service_nice``), as in production.
"""

from __future__ import annotations

import http.client
import json
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

CAMERAS = 8
CLIENTS = 4
EVENTS = 1_000_000
ASKS = 200  # of each kind of page


def _port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(connection: http.client.HTTPConnection, path: str) -> bytes:
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
    return body


def run_clients(port: int, cameras: list[str], clients: int) -> None:
    """Until killed: ``clients`` clients, each watching every camera's live
    picture and polling the newest events every second."""

    def watch(camera: str) -> None:
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                connection.request("GET", f"/api/cameras/{camera}/stream.mjpeg")
                response = connection.getresponse()
                while response.read(65536):
                    pass
            except (OSError, http.client.HTTPException):
                time.sleep(0.5)  # the chain ended or the API restarted

    def poll() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            try:
                _get(connection, "/api/events?limit=50")
            except (OSError, RuntimeError, http.client.HTTPException):
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            time.sleep(1.0)

    for _ in range(clients):
        for camera in cameras:
            threading.Thread(target=watch, args=(camera,), daemon=True).start()
        threading.Thread(target=poll, daemon=True).start()
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


def _throughput(config: dict[str, Any], tmp: Path, clients: list[str] | None) -> float:
    """Frames tracked per second, all cameras, of one run of the chain with the
    API on; ``clients``: the ``python -m`` arguments of a process that reads the
    API meanwhile (its port appended), or None."""
    from benchmarks.chain import run_chain

    port = _port()
    config = {**config, "http": {"listen": f"127.0.0.1:{port}", "api": True}}
    reader = None
    if clients is not None:
        reader = subprocess.Popen(
            [
                # at the lowest priority: they stand for browsers on other
                # machines, whose reading is no cost of this one
                *("nice", "-n", "19"),
                *(sys.executable, "-m", *clients, str(port)),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        # started before the chain (browsers take seconds to): the runs
        # compare serving the clients, not starting them
        assert reader.stdout is not None
        if reader.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the clients ({' '.join(clients)}) did not start")
    try:
        result = run_chain(config, tmp)
    finally:
        if reader is not None:
            reader.terminate()
            reader.wait(30)
    if result.code != 0:
        raise RuntimeError("the chain failed during the API benchmark")
    return sum(
        float(result.stats[f"track.{camera}"]["fps"]) for camera in config["cameras"]
    )


def compare(
    args: Any, model: Path, clip: Path, clients: list[str], who: str
) -> list[str]:
    """The chain's throughput without and with ``clients``, alternating, as a
    table and a ratio of medians."""
    from benchmarks.chain import chain_config, file_camera

    names = [f"cam{i}" for i in range(CAMERAS)]
    runs: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            for watched in (False, True) if repeat % 2 == 0 else (True, False):
                tmp = Path(folder) / f"run-{repeat}-{int(watched)}"
                tmp.mkdir()
                config = chain_config(
                    model, {n: file_camera(clip) for n in names}, tmp, args.imgsz
                )
                runs[watched].append(
                    _throughput(config, tmp, [*clients, *names] if watched else None)
                )
    bare, watched_fps = (statistics.median(runs[k]) for k in (False, True))
    return [
        "| clients | frames/s, all cameras (median) | runs |",
        "|---|---|---|",
        f"| none | {bare:.1f} | {', '.join(f'{v:.1f}' for v in runs[False])} |",
        f"| {who} | {watched_fps:.1f} | {', '.join(f'{v:.1f}' for v in runs[True])} |",
        "",
        f"Throughput with them: {watched_fps / bare:.3f} of without "
        f"({100 * (1 - watched_fps / bare):+.1f} % lost; target at most 3 %).",
        "",
    ]


def _store(path: Path, cameras: int, events: int) -> None:
    """A store of ``events`` generated events over a week, as the sqlite sink
    writes them (its schema, views and insert)."""
    from framechain.app import builtin_registry
    from pipeline.eventschema import sql_insert, sql_row, sqlite_schema, sqlite_views
    from pipeline.messages import Event

    kinds = builtin_registry().events.all()
    rng = random.Random(1)
    now = time.time()
    with sqlite3.connect(path) as db:
        db.executescript(sqlite_schema())
        db.executescript(sqlite_views(kinds))
        batch = []
        for i in range(events):
            camera = f"cam{i % cameras}"
            kind = rng.choice(("line_crossing", "line_crossing", "zone_enter"))
            track = i // 7
            batch.append(
                sql_row(
                    Event(
                        f"{camera}:mid:{kind}:{track}:{i}",
                        camera,
                        "mid",
                        kind,
                        i,
                        i / 25,
                        now - 7 * 86400 + i * 7 * 86400 / events,
                        track,
                        0,
                        "person",
                        rng.choice(("in", "out")),
                    )
                )
            )
            if len(batch) == 50_000:
                db.executemany(sql_insert(), batch)
                batch.clear()
        db.executemany(sql_insert(), batch)


def _latencies(tmp: Path, cameras: int, model: Path) -> dict[str, tuple[float, float]]:
    """p50 and p99 (ms) of each kind of /api/events page, the API alone on a
    store of ``EVENTS`` events."""
    store = tmp / "million.db"
    _store(store, cameras, EVENTS)
    port = _port()
    config = tmp / "api.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "cameras": {
                    f"cam{i}": {"source": {"kind": "rtsp", "url": "rtsp://127.0.0.1/x"}}
                    for i in range(cameras)
                },
                "models_dir": str(model.parent),
                "detector": {"model": model.name},
                "sinks": [{"kind": "sqlite", "path": str(store)}],
                "http": {"listen": f"127.0.0.1:{port}", "api": True},
            }
        )
    )
    runtime = tmp / "api-run"
    runtime.mkdir(mode=0o700)
    service = subprocess.Popen(
        [
            *(sys.executable, "-m", "framechain.cli", "stage", "api"),
            *("--config", str(config), "--runtime-dir", str(runtime)),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(connection, "/openapi.json")
                break
            except (OSError, http.client.HTTPException):
                if time.monotonic() > deadline or service.poll() is not None:
                    raise RuntimeError("the API did not start") from None
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                time.sleep(0.2)
        deep = json.loads(_get(connection, "/api/events?limit=1000"))["next"]
        pages = {
            "newest 100": "/api/events",
            "one camera": "/api/events?camera=cam3",
            "one kind": "/api/events?kind=zone_enter",
            "camera and kind": "/api/events?camera=cam5&kind=zone_enter",
            "page after 1000": f"/api/events?cursor={deep}",
            "last hour": "/api/events?since=1h",
            "one track": f"/api/events?track={EVENTS // 14}",
        }
        results = {}
        for name, path in pages.items():
            for _ in range(10):
                _get(connection, path)
            times = []
            for _ in range(ASKS):
                started = time.perf_counter()
                _get(connection, path)
                times.append(1000 * (time.perf_counter() - started))
            times.sort()
            results[name] = (
                statistics.median(times),
                times[min(len(times) - 1, int(0.99 * len(times)))],
            )
        return results
    finally:
        service.terminate()
        service.wait(10)


def suite_api(args: Any, model: Path, clip: Path) -> str:
    lines = [
        f"## framechain bench api ({CAMERAS} cameras, {clip.name}, {model.name} at "
        f"{args.imgsz}, {args.repeats} alternating runs each)",
        "",
    ]
    if args.repeats:
        lines += compare(
            args,
            model,
            clip,
            ["benchmarks.api", "--clients", str(CLIENTS)],
            f"{CLIENTS}, each watching {CAMERAS} live pictures and polling events",
        )
    else:
        lines.append("(throughput not measured: --repeats 0)")
    with tempfile.TemporaryDirectory() as folder:
        latencies = _latencies(Path(folder), CAMERAS, model)
    lines += [
        f"/api/events on a store of {EVENTS:,} events, the API alone "
        f"({ASKS} asks of each, after 10 to warm up):",
        "",
        "| page | p50 ms | p99 ms |",
        "|---|---|---|",
        *(
            f"| {name} | {p50:.1f} | {p99:.1f} |"
            for name, (p50, p99) in latencies.items()
        ),
        "",
        "Target: p99 at most 50 ms.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--clients"]:  # --clients N CAMERA... PORT
        run_clients(int(sys.argv[-1]), sys.argv[3:-1], int(sys.argv[2]))
