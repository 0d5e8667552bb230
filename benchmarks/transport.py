"""``framechain bench transport``: frames over the chain's links, shared memory
against inline pixels, sender and receiver in processes of their own."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.endurance import _free_port
from benchmarks.suite import _median, _result, _spawn


def suite_transport(args: Any) -> str:
    rows = [
        "| 1080p hop | one-way latency p50 (ms) | p99 (ms) | throughput (frames/s) |",
        "|---|---:|---:|---:|",
    ]
    results = {}
    for mode in ("shm", "tcp"):
        runs = [
            _result(_spawn({"what": "transport-send", "mode": mode}))
            for _ in range(args.repeats)
        ]
        results[mode] = runs
        label = (
            "shared memory (ipc://, slot reference)"
            if mode == "shm"
            else "inline (tcp://127.0.0.1, 6.2 MB part)"
        )
        rows.append(
            f"| {label} | {_median([r['p50_ms'] for r in runs]):.3f} | "
            f"{_median([r['p99_ms'] for r in runs]):.3f} | "
            f"{_median([r['fps'] for r in runs]):.0f} |"
        )
    copy = _median([r["ring_write_ms"] for r in results["shm"]])
    return "\n".join(
        [
            f"one 1920×1080 BGR frame per message, two processes, {os.cpu_count()} "
            f"cores, {args.repeats} repeats; latency: send to a verified view in the "
            "receiver (ping-pong), throughput: a stream with 4 frames in flight",
            "",
            *rows,
            "",
            f"writing the frame into its ring slot (decode's one copy): {copy:.3f} ms "
            "median, not part of the hop",
        ]
    )


def worker_transport(mode: str, frames: int = 300) -> dict[str, Any]:
    """Sender side; spawns the receiver itself so both ends are fresh processes."""
    import numpy as np
    import zmq

    from pipeline.messages import Frame, Heartbeat
    from pipeline.shm import FrameRing
    from pipeline.transport import Endpoint, LinkOptions, make_socket, receive, send

    tmp = Path(tempfile.mkdtemp(prefix="framechain-hop-"))
    if mode == "shm":
        data_uri = f"ipc://{tmp}/data"
    else:
        data_uri = f"tcp://127.0.0.1:{_free_port()}"
    ack_uri = f"ipc://{tmp}/acks"
    context: zmq.Context[Any] = zmq.Context()
    options = LinkOptions(hwm=8, linger_ms=0)
    data = make_socket(context, Endpoint("frames", zmq.PUSH, data_uri, True, options))
    acks = make_socket(context, Endpoint("acks", zmq.PULL, ack_uri, True, options))
    receiver = _spawn({"what": "transport-recv", "data": data_uri, "acks": ack_uri})
    pixels = np.random.default_rng(1).integers(0, 255, (1080, 1920, 3), np.uint8)
    ring = (
        FrameRing(f"fc-hop-{os.getpid()}", pixels.nbytes, 6) if mode == "shm" else None
    )
    writes: list[float] = []

    def message(seq: int) -> tuple[Frame, list[Any]]:
        ref = None
        parts: list[Any] = []
        if ring is not None:
            t0 = time.perf_counter()
            ref = ring.write(pixels)
            writes.append(time.perf_counter() - t0)
        else:
            parts = [pixels.reshape(-1).data]
        frame = Frame("hop", seq, time.time(), 0.0, 1920, 1080, 30.0, ref)
        return frame, parts

    try:
        latencies = []
        for seq in range(frames):  # ping-pong: one frame in flight
            frame, parts = message(seq)
            frame = Frame("hop", seq, time.time(), 0.0, 1920, 1080, 30.0, frame.shm)
            send(data, frame, parts)
            reply, _ = receive(acks)
            assert isinstance(reply, Heartbeat)
            latencies.append(float(reply.stats["latency_s"]))
        started = time.perf_counter()
        in_flight = 0
        for seq in range(frames):  # throughput: up to 4 in flight
            if in_flight == 4:
                receive(acks)
                in_flight -= 1
            send(data, *message(frames + seq))
            in_flight += 1
        while in_flight:
            receive(acks)
            in_flight -= 1
        throughput = frames / (time.perf_counter() - started)
        send(data, Heartbeat("stop", 0, time.time(), "stopping"))
        receiver.communicate(timeout=10)
    finally:
        if receiver.poll() is None:
            receiver.kill()
        if ring is not None:
            ring.close()
        context.destroy(linger=0)
    latencies.sort()
    return {
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
        "fps": throughput,
        "ring_write_ms": 1000 * _median(writes),
    }


def worker_transport_receive(data_uri: str, ack_uri: str) -> dict[str, Any]:
    import numpy as np
    import zmq

    from pipeline.messages import Frame, Heartbeat
    from pipeline.shm import RingReader
    from pipeline.transport import Endpoint, LinkOptions, make_socket, receive, send

    context: zmq.Context[Any] = zmq.Context()
    options = LinkOptions(hwm=8, linger_ms=0)
    data = make_socket(context, Endpoint("frames", zmq.PULL, data_uri, False, options))
    acks = make_socket(context, Endpoint("acks", zmq.PUSH, ack_uri, False, options))
    reader = RingReader()
    shape = (1080, 1920, 3)
    while True:
        message, parts = receive(data)
        if not isinstance(message, Frame):
            break
        if message.shm is not None:
            view = reader.view(message.shm, shape)
            checksum = int(view[540, 960, 0])  # touch the pixels
            reader.verify(message.shm, shape)
        else:
            view = np.frombuffer(parts[0], np.uint8).reshape(shape)
            checksum = int(view[540, 960, 0])
        latency = time.time() - message.capture_ts
        stats = {"latency_s": latency, "checksum": checksum}
        send(acks, Heartbeat("hop", os.getpid(), time.time(), "running", stats))
    reader.close()
    context.destroy(linger=0)
    return {"ok": True}
