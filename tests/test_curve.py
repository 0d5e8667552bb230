"""tcp:// links between hosts: CURVE-encrypted and authenticated with keys from
`framechain keys`. Frames flow, a peer with an unknown key is refused, and a capture
of the traffic shows no plaintext header field."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
import zmq
import zmq.auth
from conftest import ASSETS, REPO, chain_env, free_port
from live import ChainRun

from pipeline.messages import Frame, encode


@contextmanager
def captured(port: int, pcap: Path) -> Iterator[None]:
    """tcpdump of one loopback port into ``pcap`` while the block runs."""
    if shutil.which("tcpdump") is None:
        pytest.fail("tcpdump missing: tests/install-system-deps.sh installs it")
    dump = subprocess.Popen(
        ["tcpdump", "-i", "lo", "-U", "-n", "-w", str(pcap), f"tcp port {port}"],
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    try:
        yield
    finally:
        time.sleep(0.5)
        dump.terminate()
        dump.wait(10)
    assert pcap.exists() and pcap.stat().st_size > 24, dump.stderr.read()


def fake_frame() -> list[bytes]:
    message = Frame("crowd", 0, time.time(), 0.0, 160, 90, 25.0, None)
    return [encode(message), bytes(160 * 90 * 3)]


def test_plain_tcp_headers_are_visible_on_the_wire(tmp_path: Path) -> None:
    """The control: without CURVE the capture shows the header fields, so the
    encrypted test below would notice them."""
    port = free_port()
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.bind(f"tcp://127.0.0.1:{port}")
    push = context.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    with captured(port, tmp_path / "plain.pcap"):
        push.send_multipart(fake_frame())
        assert pull.poll(5000)
        pull.recv_multipart()
    context.destroy(linger=0)
    data = (tmp_path / "plain.pcap").read_bytes()
    assert b"crowd" in data and b"frame" in data


def test_keys_command_writes_a_keypair(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "framechain.cli",
            "keys",
            "edge-01",
            "--dir",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=chain_env(),
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    public, secret = zmq.auth.load_certificate(tmp_path / "edge-01.key_secret")
    assert len(public) == 40 and len(secret) == 40
    assert (tmp_path / "edge-01.key_secret").stat().st_mode & 0o077 == 0
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "framechain.cli",
            "keys",
            "edge-01",
            "--dir",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=chain_env(),
        timeout=30,
    )
    assert again.returncode == 1 and "exists already" in again.stderr


@pytest.mark.slow
def test_curve_link_is_encrypted_and_refuses_unknown_keys(tmp_path: Path) -> None:
    """decode -> detect over tcp:// with CURVE: every frame arrives, two intruders
    (an unknown CURVE key, and no CURVE at all) get nothing in, and the wire shows
    neither the camera name nor a message tag."""
    keys, allowed = tmp_path / "keys", tmp_path / "allowed"
    allowed.mkdir()
    keys.mkdir()
    zmq.auth.create_certificates(keys, "edge")
    zmq.auth.create_certificates(keys, "intruder")
    shutil.copy(keys / "edge.key", allowed / "edge.key")
    port = free_port()
    config = {
        "models_dir": str(ASSETS),
        "cameras": {
            "crowd": {
                "source": {"kind": "file", "path": str(ASSETS / "crowd.mp4")},
                "decode": {"resize": [160, 90]},
            }
        },
        # the link is under test, not the detections: a small input keeps it quick
        "detector": {"model": "yolo11n.onnx", "imgsz": 160},
        "sinks": [{"kind": "sqlite", "path": str(tmp_path / "events.db")}],
        "links": {
            "endpoints": {"detect.in": f"tcp://127.0.0.1:{port}"},
            "curve": {
                "secret_key_file": str(keys / "edge.key_secret"),
                "allowed_clients_dir": str(allowed),
                "server_keys": {"detect.in": str(keys / "edge.key")},
            },
        },
    }
    context = zmq.Context()
    with captured(port, tmp_path / "curve.pcap"):
        run = ChainRun(tmp_path, config).start()
        intruder = context.socket(zmq.PUSH)
        intruder.curve_publickey, intruder.curve_secretkey = zmq.auth.load_certificate(
            keys / "intruder.key_secret"
        )
        intruder.curve_serverkey = zmq.auth.load_certificate(keys / "edge.key")[0]
        intruder.connect(f"tcp://127.0.0.1:{port}")
        plain = context.socket(zmq.PUSH)
        plain.connect(f"tcp://127.0.0.1:{port}")
        for _ in range(5):
            for sock in (intruder, plain):
                try:
                    sock.send_multipart(fake_frame(), zmq.NOBLOCK)
                except zmq.Again:
                    pass
        deadline = time.monotonic() + 120
        while run.code is None:
            assert time.monotonic() < deadline, "the chain did not finish"
            time.sleep(0.2)
    context.destroy(linger=0)
    assert run.code == 0
    detect = run.supervisor.children["detect"].stats
    assert run.supervisor.children["track.crowd"].stats["frames"] == 460
    assert detect["received"] == 461  # 460 frames and the end of stream, nothing else
    assert detect.get("invalid_messages", 0) == 0
    data = (tmp_path / "curve.pcap").read_bytes()
    assert len(data) > 460 * 160 * 90 * 3  # the pixels did cross this port
    assert b"crowd" not in data and b"frame" not in data and b"detected" not in data


@contextmanager
def two_hosts() -> Iterator[tuple[str, str]]:
    """Two network namespaces joined by a veth pair: 10.231.0.1 and 10.231.0.2."""
    suffix = str(os.getpid())[-5:]
    a, b = f"fca{suffix}", f"fcb{suffix}"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)

    try:
        ip("netns", "add", a)
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        pytest.skip(f"network namespaces cannot be created here: {e}")
    try:
        ip("netns", "add", b)
        ip("link", "add", f"va{suffix}", "type", "veth", "peer", "name", f"vb{suffix}")
        ip("link", "set", f"va{suffix}", "netns", a)
        ip("link", "set", f"vb{suffix}", "netns", b)
        for ns, dev, address in (
            (a, f"va{suffix}", "10.231.0.1/24"),
            (b, f"vb{suffix}", "10.231.0.2/24"),
        ):
            ip("-n", ns, "addr", "add", address, "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield a, b
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


@pytest.mark.slow
def test_two_hosts_over_curve(tmp_path: Path) -> None:
    """Detect on one host (namespace), the camera side on another: frames go out and
    detections come back over CURVE links across a real network interface, and the
    run completes with every frame tracked."""
    keys, allowed = tmp_path / "keys", tmp_path / "allowed"
    keys.mkdir()
    allowed.mkdir()
    for host in ("edge", "gpu"):
        zmq.auth.create_certificates(keys, host)
        shutil.copy(keys / f"{host}.key", allowed / f"{host}.key")
    with two_hosts() as (edge, gpu):
        config = {
            "models_dir": str(ASSETS),
            "cameras": {
                "crowd": {
                    "source": {"kind": "file", "path": str(ASSETS / "traffic.mp4")}
                }
            },
            "detector": {"model": "yolo11n.onnx", "imgsz": 320},
            "sinks": [{"kind": "sqlite", "path": str(tmp_path / "events.db")}],
            "links": {
                "endpoints": {
                    "detect.in": "tcp://10.231.0.2:5701",
                    "track.crowd.in": "tcp://10.231.0.1:5702",
                },
                "curve": {
                    "secret_key_file": str(keys / "edge.key_secret"),
                    "allowed_clients_dir": str(allowed),
                    "server_keys": {
                        "detect.in": str(keys / "gpu.key"),
                        "track.crowd.in": str(keys / "edge.key"),
                    },
                },
            },
        }
        gpu_config = tmp_path / "gpu.yaml"
        gpu_side = {
            **config,
            "links": {
                **config["links"],
                "curve": {
                    **config["links"]["curve"],
                    "secret_key_file": str(keys / "gpu.key_secret"),
                },
            },
        }
        gpu_config.write_text(yaml.safe_dump(gpu_side))

        def place(stage: str, argv: list[str]) -> list[str]:
            if stage == "detect":  # the GPU host runs its own config (its own key)
                argv = [gpu_config if a.endswith("chain.yaml") else a for a in argv]
                return ["ip", "netns", "exec", gpu, *map(str, argv)]
            return ["ip", "netns", "exec", edge, *argv]

        run = ChainRun(tmp_path, config, wrap=place).start()
        deadline = time.monotonic() + 120
        while run.code is None:
            assert time.monotonic() < deadline, "the two-host chain did not finish"
            time.sleep(0.2)
    assert run.code == 0
    assert run.supervisor.children["track.crowd"].stats["frames"] == 480
    assert run.supervisor.restart_count == 0
