"""Test helper process: sends one deterministic 1080p frame as a ``Frame`` message,
through a shared-memory ring (ipc) or inline (tcp), then prints its sha256."""

from __future__ import annotations

import hashlib
import sys
import time

import numpy as np
import zmq

from pipeline.messages import Frame
from pipeline.shm import FrameRing
from pipeline.transport import Endpoint, LinkOptions, make_socket, send


def main(uri: str, ring_name: str) -> None:
    pixels = np.random.default_rng(1080).integers(0, 256, (1080, 1920, 3), np.uint8)
    context = zmq.Context()
    sock = make_socket(
        context, Endpoint("out", zmq.PUSH, uri, False, LinkOptions(linger_ms=2000))
    )
    ring = FrameRing(ring_name, pixels.nbytes, 2) if ring_name != "-" else None
    ref = ring.write(pixels) if ring else None
    message = Frame("cam", 0, time.time(), 0.0, 1920, 1080, 30.0, ref)
    send(sock, message, () if ring else (memoryview(pixels.reshape(-1)),))
    print(hashlib.sha256(pixels.tobytes()).hexdigest(), flush=True)
    sys.stdin.readline()  # keep the ring alive until the reader is done
    if ring:
        ring.close()
    context.destroy()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
