"""Running framechain as an appliance: metrics and health over HTTP, systemd
integration (notify, watchdog, units), rule reload on SIGHUP, JSON logs, and tcp://
links encrypted and authenticated with CURVE."""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import (
    ASSETS,
    REPO,
    chain_env,
    read_events,
    running_stage_pid,
    spawn_run,
    wait_until,
)
from conftest import CROWD_LINE as LINE
from conftest import CROWD_WHOLE_FRAME as ZONE
from live import ChainRun, free_port


def paced_config(tmp: Path, **extra: Any) -> dict[str, Any]:
    """crowd.mp4 played at its own pace, like a camera: a run lasts about 19 s."""
    source = {"kind": "file", "path": str(ASSETS / "crowd.mp4"), "realtime": True}
    return {
        "models_dir": str(ASSETS),
        "cameras": {"crowd": {"source": source, "rules": [LINE]}},
        "sinks": [{"kind": "sqlite", "path": str(tmp / "events.db")}],
        **extra,
    }


def start_cli(
    tmp: Path,
    config: dict[str, Any],
    env: dict[str, str] | None = None,
) -> subprocess.Popen[str]:
    path = tmp / "appliance.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return spawn_run(path, env)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


def metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.slow
def test_metrics_health_and_readiness(tmp_path: Path) -> None:
    """/metrics carries the documented series with sane values; /readyz is 503 while
    starting, 200 when every stage runs, 503 when a stage is killed, 200 again after
    its restart; /healthz is 200 throughout."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_cli(
        tmp_path, paced_config(tmp_path, http={"listen": f"127.0.0.1:{port}"})
    )
    try:
        wait_until(lambda: get(f"{base}/healthz")[0] == 200, 30, "/healthz")
        wait_until(lambda: get(f"{base}/readyz")[0] == 200, 60, "ready")
        time.sleep(3)
        status, text = get(f"{base}/metrics")
        assert status == 200
        values = metrics(text)
        tracked = values[
            ("framechain_frames_total", (("camera", "crowd"), ("stage", "track")))
        ]
        assert 20 < tracked < 460
        assert values[("framechain_camera_online", (("camera", "crowd"),))] == 1.0
        assert all(
            values[("framechain_stage_up", (("stage", s),))] == 1.0
            for s in (
                "capture.crowd",
                "decode.crowd",
                "detect",
                "track.crowd",
                "sink.sqlite",
            )
        )
        p99 = values[
            (
                "framechain_frame_age_seconds",
                (("camera", "crowd"), ("quantile", "0.99"), ("stage", "track")),
            )
        ]
        assert 0 < p99 < 5
        assert (
            values[("framechain_inference_seconds_count", (("stage", "detect"),))] > 5
        )
        assert (
            values[("framechain_end_to_end_seconds_count", (("camera", "crowd"),))] > 20
        )
        # paced: the sink keeps up, so at most a batch in flight, never a negative
        # or a count of everything produced (a backlog that is never subtracted)
        stored = values[("framechain_events_total", (("sink", "sqlite"),))]
        backlog = values[("framechain_sink_backlog", (("sink", "sqlite"),))]
        assert stored > 0 and 0 <= backlog <= 20 and backlog < stored
        assert (
            "framechain_frames_dropped_total",
            (("camera", "crowd"), ("reason", "behind")),
        ) in values

        os.kill(running_stage_pid("detect", process.pid), signal.SIGKILL)
        wait_until(lambda: get(f"{base}/readyz")[0] == 503, 10, "readyz to flip")
        body = json.loads(get(f"{base}/readyz")[1])
        assert body["stages"]["detect"] != "running" and body["cameras"]
        assert get(f"{base}/healthz")[0] == 200
        wait_until(
            lambda: get(f"{base}/readyz")[0] == 200, 30, "ready after the restart"
        )
        restarts = metrics(get(f"{base}/metrics")[1])
        assert (
            restarts[("framechain_stage_restarts_total", (("stage", "detect"),))] == 1
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert process.returncode == 0


@pytest.mark.slow
def test_systemd_notify_and_watchdog(tmp_path: Path) -> None:
    """Under systemd (Type=notify): READY=1 once every stage runs, WATCHDOG=1 from
    the supervisor's loop every quarter of WatchdogSec (never two-thirds of it
    without one, even on a loaded 2-core runner), STOPPING=1 on SIGTERM, on a
    socket the test provides."""
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(1.0)
    env = {**chain_env(), "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "3000000"}
    process = start_cli(tmp_path, paced_config(tmp_path), env)
    received: list[tuple[float, str]] = []

    def read_until(condition, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            try:
                received.append((time.monotonic(), sock.recv(4096).decode()))
            except TimeoutError:
                continue
        assert condition(), received

    try:
        read_until(lambda: any("READY=1" in m for _, m in received), 60)
        read_until(lambda: sum("WATCHDOG=1" in m for _, m in received) >= 4, 10)
        process.send_signal(signal.SIGTERM)
        read_until(lambda: any("STOPPING=1" in m for _, m in received), 15)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
        sock.close()
    pings = [t for t, m in received if "WATCHDOG=1" in m]
    assert max(b - a for a, b in pairwise(pings)) <= 2.0
    assert statistics.median(b - a for a, b in pairwise(pings)) <= 0.9


def test_systemd_units_verify(tmp_path: Path) -> None:
    """systemd-analyze verify accepts both units (with ExecStart pointed at this
    checkout's framechain), and they keep the hardening the unit files promise."""
    if not Path("/usr/bin/systemd-analyze").exists():
        pytest.fail("systemd-analyze missing: install Debian's systemd (.ci/run does)")
    framechain = Path(sys.executable).parent / "framechain"
    units = []
    for name, target in (
        ("framechain.service", "framechain.service"),
        ("framechain-stage@.service", "framechain-stage@detect.service"),
    ):
        text = (REPO / "systemd" / name).read_text()
        for setting in (
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "DevicePolicy=closed",
            "DeviceAllow=char-video4linux rw",
            "RestrictAddressFamilies=",
        ):
            assert setting in text, f"{name} lacks {setting}"
        path = tmp_path / target
        path.write_text(
            text.replace("/opt/framechain/.venv/bin/framechain", str(framechain))
        )
        units.append(str(path))
    assert "Type=notify" in (REPO / "systemd" / "framechain.service").read_text()
    result = subprocess.run(
        ["systemd-analyze", "verify", *units],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "framechain" not in result.stderr, result.stderr


@pytest.mark.slow
def test_sighup_reloads_rules_and_keeps_track_ids(tmp_path: Path) -> None:
    """A zone added to the config and loaded with SIGHUP starts reporting at once,
    while the tracker carries on: tracks that began before the reload keep their ids
    (no reset to 0)."""
    config = paced_config(tmp_path)
    run = ChainRun(tmp_path, config).start()
    run.wait_for(lambda: run.stats("track.crowd").get("frames", 0) > 150, 60, "frames")
    config["cameras"]["crowd"]["rules"] = [LINE, ZONE]
    run.path.write_text(yaml.safe_dump(config, sort_keys=False))
    before = run.stats("track.crowd")["frames"]
    run.supervisor.request_reload(signal.SIGHUP, None)
    run.wait_for(lambda: run.stats("track.crowd").get("reloads", 0) == 1, 10, "reload")
    run.wait_for(
        lambda: run.stats("track.crowd").get("frames", 0) > before + 150,
        60,
        "frames after the reload",
    )
    assert run.stop() == 0
    events = read_events(tmp_path / "events.db")
    zone = [e for e in events if e["kind"] == "zone_occupancy"]
    crossings = [e for e in events if e["kind"] == "line_crossing"]
    assert zone and min(e["seq"] for e in zone) >= before
    reload_seq = min(e["seq"] for e in zone)
    early_ids = {e["track_id"] for e in crossings if e["seq"] < reload_seq}
    late = [e for e in crossings if e["seq"] > reload_seq + 30]
    assert early_ids and late
    assert min(e["track_id"] for e in late) > min(early_ids)  # ids did not restart


def test_json_logs_are_one_object_per_line(tmp_path: Path) -> None:
    """log_format: json gives one parseable, redacted JSON object per line."""
    script = (
        "import logging; from pipeline.log import setup_logging; "
        "setup_logging('capture.cam', 'INFO', 'json'); "
        "logging.getLogger('x').warning('open %s failed', "
        "'rtsp://admin:hunter2@10.0.0.2/live')"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["stage"] == "capture.cam" and entry["level"] == "WARNING"
    assert "hunter2" not in lines[0] and "rtsp://***@10.0.0.2/live" in entry["message"]


@pytest.mark.parametrize(
    "dockerfile", ["Dockerfile", "Dockerfile.cuda", "Dockerfile.jetson"]
)
def test_dockerfiles_pass_hadolint_and_run_as_non_root(dockerfile: str) -> None:
    """Every image: hadolint clean, a numeric non-root USER, a HEALTHCHECK on /healthz
    with a start period long enough for model loading or engine builds. No
    Docker engine runs here, so the images themselves are not built by the tests."""
    hadolint = Path(sys.executable).parent / "hadolint"
    path = REPO / "docker" / dockerfile
    result = subprocess.run(
        [str(hadolint), "--config", str(REPO / ".hadolint.yaml"), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = path.read_text()
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and all(
        u.split(":")[0].isdigit() and u.split(":")[0] != "0" for u in users
    )
    assert "/healthz" in text and "HEALTHCHECK" in text
    start = int(text.split("--start-period=")[1].split("s")[0])
    assert start >= (600 if dockerfile != "Dockerfile" else 120)
    assert "--privileged" not in text


def test_compose_file() -> None:
    """The example compose file restarts services, sizes shared memory and runs the
    broker beside framechain, without privileges."""
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"framechain", "mosquitto"}
    assert all(s["restart"] == "unless-stopped" for s in services.values())
    assert services["framechain"]["shm_size"]
    assert not any(s.get("privileged") for s in services.values())
