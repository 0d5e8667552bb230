"""Cameras that come and go: a real RTSP server dropped again and again, a password
changed under a running camera, a host name that does not resolve. A camera that
was working comes back within the bound of its reconnect rule
(``pipeline.backoff``); every change of the reason it is offline is an event."""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import of_kind, read_events
from live import ChainRun, RtspServer
from test_live import chain, frames, live_config, long_clip  # noqa: F401  (fixtures)

from pipeline.backoff import Backoff

# the rule's bound: outage_cap_s (5 s) with +20 % jitter, then the time to connect
# and get the first packet through (~1 s here; 2 s of slack for a loaded box)
RECOVERY_BOUND_S = 5.0 * 1.2 + 2.0


def _delays(backoff: Backoff, failures: int, now: float = 0.0) -> list[float]:
    return [backoff.next_delay(now + i) for i in range(failures)]


def test_backoff_rule() -> None:
    """The rule itself, without jitter: a camera that fails within seconds of
    connecting keeps doubling; one that delivered for reset_after_s starts over
    and stays under the cap for the first outage_fast_s of the outage."""
    flapping = Backoff(jitter=0)
    for t in range(6):  # connects, delivers 2 s, fails
        flapping.delivering(100.0 * t)
        delay = flapping.next_delay(100.0 * t + 2)
    assert delay == 30.0  # 1, 2, 4, 8, 16, 30: it never counted as healthy
    healthy = Backoff(jitter=0, failures=12)  # a long history of failures
    healthy.delivering(0.0)
    assert _delays(healthy, 8, now=12.0) == [1, 2, 4, 5, 5, 5, 5, 5]
    late = Backoff(jitter=0)
    late.delivering(0.0)
    late.next_delay(12.0)
    assert late.next_delay(12.0 + 61) == 2.0  # past the fast window: doubling again
    assert late.next_delay(12.0 + 62) == 4.0


@contextmanager
def readyz(run: ChainRun) -> Iterator[Callable[[], tuple[int, dict[str, Any]]]]:
    """The run's /readyz, served as ``framechain run`` serves it."""
    from framechain.app import load as load_config
    from pipeline.observability import HealthServer

    loaded = load_config(run.path)
    kinds = loaded.registry.process_kinds(loaded.config)
    server = HealthServer("127.0.0.1:0", run.supervisor.snapshot, kinds)
    server.start()

    def get() -> tuple[int, dict[str, Any]]:
        url = f"http://127.0.0.1:{server.port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    try:
        yield get
    finally:
        server.close()


@pytest.mark.slow
def test_flapping_server_recovers_within_the_bound(
    chain: Callable[..., ChainRun],  # noqa: F811
    tmp_path: Path,
    long_clip: Path,  # noqa: F811
) -> None:
    """Drops of 0.5 s, 20 s and a random 2–12 s, each after 20–40 s of stream: the
    camera is back within RECOVERY_BOUND_S of the server every time (it was
    healthy before each drop), /readyz names it while it is away, nothing
    restarts."""
    server = RtspServer(long_clip)
    server.start()
    try:
        run = chain(live_config(tmp_path, {"kind": "rtsp", "url": server.url}))
    except BaseException:
        server.kill()
        raise
    rng = random.Random(20261203)
    downs = [0.5, 20.0, rng.uniform(2, 12)]
    backs: list[float] = []
    away: list[tuple[int, dict[str, Any]]] = []
    with readyz(run) as get:
        try:
            run.wait_for(lambda: frames(run) > 0, 60, "first frames")
            for i, down in enumerate(downs):
                time.sleep(rng.uniform(20, 40))
                server.kill()
                if down >= 2:
                    run.wait_for(
                        lambda: run.stats("capture.cam").get("state") == "offline",
                        down,
                        "offline",
                    )
                    away.append(get())
                time.sleep(max(0.0, down - 1.0) if down >= 2 else down)
                server.start()
                backs.append(time.time())
                run.wait_for(
                    lambda n=i + 1: run.stats("capture.cam").get("reconnects", 0) >= n,
                    30,
                    "reconnection",
                )
            time.sleep(2)
            assert get()[0] == 200
            stats = run.stats("capture.cam")
        finally:
            server.kill()
    assert run.stop() == 0
    assert run.supervisor.restart_count == 0
    events = read_events(tmp_path / "events.db")
    online = sorted(e["capture_ts"] for e in of_kind(events, "camera_online"))
    offline = of_kind(events, "camera_offline")
    assert len(online) == len(downs) + 1
    assert {e["direction"] for e in offline} <= {"eof", "stalled", "refused", "error"}
    for back, down in zip(backs, downs, strict=True):
        took = min(t for t in online if t > back - 0.5) - back
        print(f"a {down:.1f} s drop: back {took:.1f} s after the server")
        assert took <= RECOVERY_BOUND_S, (took, backs, stats["attempts"])
    assert stats["reconnect_attempts"] >= len(downs)
    for status, body in away:
        assert status == 503 and body["offline"] == ["cam"], body  # the only camera
        assert body["cameras"]["cam"]["state"] == "offline"


@pytest.mark.slow
def test_password_changed_under_a_running_camera(
    chain: Callable[..., ChainRun],  # noqa: F811
    tmp_path: Path,
    long_clip: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The camera streams, its server comes back with another password: the
    offline event of the drop is followed by one saying auth_failed, stored,
    and the stage reports the reason."""
    server = RtspServer(long_clip, "admin", "right")
    server.start()
    monkeypatch.setenv("CAM_PASSWORD", "right")
    url = f"rtsp://admin:${{CAM_PASSWORD}}@127.0.0.1:{server.port}/live"
    try:
        run = chain(live_config(tmp_path, {"kind": "rtsp", "url": url}))
        run.wait_for(lambda: frames(run) > 10, 60, "first frames")
        server.kill()
        changed = RtspServer(long_clip, "admin", "changed")
        changed.port = server.port
        server = changed
        server.start()
        run.wait_for(
            lambda: run.stats("capture.cam").get("offline_reason") == "auth_failed",
            30,
            "auth_failed",
        )
    finally:
        server.kill()
    assert run.stop() == 0
    reasons = [
        e["direction"]
        for e in of_kind(read_events(tmp_path / "events.db"), "camera_offline")
    ]
    assert reasons[-1] == "auth_failed" and len(reasons) >= 2, reasons
    assert reasons.count("auth_failed") == 1  # a reason that stays is not repeated


@pytest.mark.slow
def test_unresolvable_host_says_dns(
    chain: Callable[..., ChainRun],  # noqa: F811
    tmp_path: Path,
) -> None:
    url = "rtsp://camera.framechain-test.invalid:8554/live"
    run = chain(live_config(tmp_path, {"kind": "rtsp", "url": url}))
    run.wait_for(
        lambda: run.stats("capture.cam").get("offline_reason") == "dns", 40, "dns"
    )
    assert run.stop() == 0
    offline = of_kind(read_events(tmp_path / "events.db"), "camera_offline")
    assert [e["direction"] for e in offline] == ["dns"]
    assert "camera.framechain-test.invalid" in json.loads(offline[0]["data"])["detail"]
