"""Starts every stage as its own OS process, watches exits and heartbeats, restarts
with capped exponential backoff, and drains on SIGTERM.

Following Frigate's watchdog and the zguide's pirate: exit 0 means the stage is done;
any other exit, or a heartbeat silence longer than the limit, means restart, at most
``max_restarts`` times per window, after which the whole run fails so that systemd or
Docker can restart it. A service (a stage beside the chain) that fails that often is
reported and left down instead: the chain does not depend on it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import zmq

from pipeline.filewatch import FileWatch
from pipeline.group import listed
from pipeline.messages import Heartbeat
from pipeline.processes import (
    PERMANENT_EXITS,
    MonitoredProcess,
    StageRoles,
    exit_reason,
    reported_state,
)
from pipeline.registry import read_stats
from pipeline.sdnotify import Notifier
from pipeline.settings import SupervisorConfig
from pipeline.stageplan import RUN_ID_VARIABLE, RuntimeStats
from pipeline.statusfile import StatusFile
from pipeline.transport import Endpoint, LinkOptions, make_socket, receive

WATCH_INTERVAL_S = 0.1
UNRESPONSIVE_S = 2.0  # a running stage silent this long is reported, not yet killed

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(
        self,
        stages: Sequence[str],
        command: Callable[[str, str], list[str]],
        runtime_dir: Path,
        config: SupervisorConfig,
        roles: StageRoles | None = None,
        environ: Mapping[str, str] | None = None,
        config_path: Path | None = None,
    ) -> None:
        """``command(stage, control_uri)`` gives the argv that runs one stage;
        ``config_path``: the file watched for rule changes (``watch_config``)."""
        self.config = config
        self.runtime_dir = runtime_dir
        self.control_uri = f"ipc://{runtime_dir}/control"
        self.children = {
            name: MonitoredProcess(name, command(name, self.control_uri))
            for name in stages
        }
        self.roles = roles or StageRoles()
        self.terminal = [n for n in stages if n in self.roles.terminal]
        self.services = {n for n in stages if n in self.roles.services}
        # what services read of the chain (pipeline/statusfile.py)
        self.status_file = StatusFile(runtime_dir) if self.services else None
        self.stop_requested = False
        self.reload_requested = False
        self.failed = False
        self.failure = ""  # the one line that says why the run gave up
        self.restart_count = 0
        # every stage of this run gets it: a restarted stage resumes its own
        # checkpoint exactly; a later run's judges what of it still holds
        self.run_id = f"{time.time_ns():x}-{os.getpid()}"
        self.status = "starting"
        self.notifier = Notifier(environ if environ is not None else os.environ)
        self._next_watchdog = 0.0
        self.config_file = FileWatch(config_path if config.watch_config else None)

    def request_stop(self, signum: int, _frame: FrameType | None) -> None:
        if not self.stop_requested:
            log.info("received %s: stopping all stages", signal.Signals(signum).name)
        self.stop_requested = True

    def request_reload(self, signum: int, _frame: FrameType | None) -> None:
        self.reload_requested = True  # acted on in the loop, not in the handler

    def snapshot(self) -> dict[str, Any]:
        """The chain's state for /metrics and /readyz (from another thread): a
        running stage gone silent is ``unresponsive``, one stuck ``stalled``."""
        now = time.monotonic()
        stages = {}
        for name, c in list(self.children.items()):
            state: str = c.state
            if state == "running" and now - c.last_beat > UNRESPONSIVE_S:
                state = "unresponsive"
            elif state == "running" and c.stalled_s > UNRESPONSIVE_S:
                state = "stalled"
            entry = {"state": state, "restarts": len(c.restarts), "stats": c.stats}
            stages.update(listed(name, entry, self.roles.members.get(name, ())))
        return {"status": self.status, "stages": stages}

    def _lifecycle(self) -> None:
        """Readiness, the systemd watchdog from this progressing loop, and reloads."""
        if self.status == "starting" and all(
            c.state in ("running", "done")
            for c in self.children.values()
            if c.name not in self.services  # the chain does not wait for them
        ):
            self.status = "running"
            self.notifier.notify("READY=1\nSTATUS=all stages running")
            log.info("all %d stages running", len(self.children))
        self._watchdog()
        now = time.monotonic()
        if self.status_file is not None and self.status_file.due(now):
            self.status_file.write(self.snapshot(), now)
        if self.config_file.changed():
            self.reload_requested = True
        if self.reload_requested:
            self.reload_requested = False
            log.info("reloading rules (SIGHUP to the track stages)")
            for name, child in self.children.items():
                if name in self.roles.reloads and child.alive:
                    assert child.process is not None
                    child.process.send_signal(signal.SIGHUP)

    def _watchdog(self) -> None:
        """WATCHDOG=1 only from loops that make progress, never from a timer thread.

        The next ping is due one interval after this one was *due*, not after it was
        sent: counting from the send time added each turn's lateness (up to a
        watch interval, more on a loaded box) to every period, so a quarter of
        WatchdogSec became a third. A turn late by more than an interval pings
        now and counts the next interval from now (no burst to catch up)."""
        interval = self.notifier.watchdog_interval_s
        now = time.monotonic()
        if interval is None or now < self._next_watchdog:
            return
        self.notifier.notify("WATCHDOG=1")
        due = self._next_watchdog + interval
        self._next_watchdog = due if due > now else now + interval

    def run(self, on_tick: Callable[[Supervisor], None] | None = None) -> int:
        """Run the chain to completion (or stop/failure); returns the exit status."""
        context: zmq.Context[Any] = zmq.Context()
        control = make_socket(
            context,
            Endpoint(
                "control", zmq.PULL, self.control_uri, True, LinkOptions(hwm=1000)
            ),
        )
        try:
            for child in self.children.values():
                self._start(child)
            while not self._all_done():
                # heartbeats as they come, a pass over the children ten times a
                # second (not once per heartbeat: 30 stages send 60 a second)
                self._receive(control, WATCH_INTERVAL_S)
                self._watch()
                self._lifecycle()
                if self.stop_requested or self.failed:
                    break
                if self._terminal_done():
                    log.info("all sinks finished; stopping the remaining stages")
                    break
                if on_tick is not None:
                    on_tick(self)
            if not self.stop_requested:
                self._check_all_recovered()
            self.status = "stopping"
            self.notifier.notify("STOPPING=1")
            stop_deadline = time.monotonic() + self.config.stop_timeout_s
            if self.stop_requested and not self.failed:
                self._end_streams(control, stop_deadline)
            self._stop_all(control, stop_deadline)
            if on_tick is not None:
                on_tick(self)
        finally:
            context.destroy(linger=0)
        return 1 if self.failed else 0

    # -- children --------------------------------------------------------------------
    def _start(self, child: MonitoredProcess) -> None:
        environ = {**os.environ, RUN_ID_VARIABLE: self.run_id}
        child.process = subprocess.Popen(child.command, env=environ)
        if child.name in self.services and self.config.service_nice:
            # the chain first: a service drawing pictures for many viewers
            # must not take the cores the counting needs (framechain bench api)
            with contextlib.suppress(OSError):
                os.setpriority(
                    os.PRIO_PROCESS, child.process.pid, self.config.service_nice
                )
        child.stats = {}
        child.started = child.last_beat = time.monotonic()
        child.state, child.exit_code = "starting", None
        log.debug("started %s (pid %d)", child.name, child.process.pid)

    def _receive(self, control: zmq.Socket[Any], for_s: float = 0.05) -> None:
        """Take heartbeats for ``for_s`` seconds (returns at once when stopping)."""
        until = time.monotonic() + for_s
        while True:
            left = until - time.monotonic()
            if left <= 0 or not control.poll(max(1, math.ceil(left * 1000))):
                return
            self._take_heartbeats(control)
            if self.stop_requested:
                return

    def _take_heartbeats(self, control: zmq.Socket[Any]) -> None:
        while True:
            try:
                message, _ = receive(control, zmq.NOBLOCK)
            except zmq.Again:
                return
            except Exception as e:  # a malformed heartbeat must not stop supervision
                log.warning("ignored a bad control message: %s", e)
                continue
            if not isinstance(message, Heartbeat):
                continue
            child = self.children.get(message.stage)
            if child is None or message.pid != getattr(child.process, "pid", None):
                continue
            child.last_beat = time.monotonic()
            child.stats = message.stats
            reported = reported_state(message.state)
            if reported is not None and child.state not in ("done", "stopping"):
                child.state = reported

    def _watch(self) -> None:
        now = time.monotonic()
        cfg = self.config
        for child in self.children.values():
            if child.state in ("done", "failed"):
                continue
            if child.process is None:
                if now >= child.next_start and not self.stop_requested:
                    self._start(child)
                continue
            code = child.process.poll()
            if code == 0:
                child.exited(0)
                continue
            if code in PERMANENT_EXITS:
                self._give_up(child, code)
                continue
            if code is not None:
                log.error("stage %s exited with status %s", child.name, code)
                self._schedule_restart(child, code)
                continue
            limit = (
                cfg.startup_timeout_s
                if child.state == "starting"
                else cfg.heartbeat_timeout_s
            )
            if now - child.last_beat > limit:
                log.error(
                    "stage %s silent for %.0fs: killing it",
                    child.name,
                    now - child.last_beat,
                )
                self._kill_and_restart(child, "stopped responding")
            elif child.state == "running" and child.stalled_s > cfg.stall_timeout_s:
                log.error(
                    "stage %s made no progress for %.0fs with work waiting: "
                    "restarting it",
                    child.name,
                    child.stalled_s,
                )
                self._kill_and_restart(child, "stalled")

    def _kill_and_restart(self, child: MonitoredProcess, why: str) -> None:
        """A stage alive but not working: SIGKILL, then a counted restart."""
        assert child.process is not None
        child.process.kill()
        child.process.wait()
        child.stats = {**child.stats, "last_error": why}
        self._schedule_restart(child, -signal.SIGKILL)

    def _check_all_recovered(self) -> None:
        """A run that ends while a stage is down (a restart pending) did not do all
        it was asked (an annotated video, a sink): it fails, not succeeds."""
        for child in self.children.values():
            if child.name in self.services:
                continue  # beside the chain: the run did all it was asked
            if child.state == "restarting" and not self.failed:
                error = child.stats.get("last_error") or exit_reason(
                    child.exit_code or 1
                )
                self.failure = (
                    f"stage {child.name} was down when the run ended ({error})"
                )
                self.failed = True

    def _give_up(self, child: MonitoredProcess, code: int) -> None:
        """A stage that says a restart cannot help ends the run now, and why."""
        error = child.stats.get("last_error") or exit_reason(code)
        child.exit_code, child.process, child.state = code, None, "failed"
        if self._service_failed(child, f"cannot run: {error}"):
            return
        self.failure = f"stage {child.name} cannot run: {error}"
        self.failed = True

    def _service_failed(self, child: MonitoredProcess, why: str) -> bool:
        """A service that fails is reported once and left down; the chain goes
        on (true). A stage of the chain: false, the run fails."""
        if child.name not in self.services:
            return False
        child.state = "failed"
        log.error(
            "service %s %s; the chain goes on without it (fix it and restart "
            "the run to bring it back)",
            child.name,
            why,
        )
        return True

    def _schedule_restart(self, child: MonitoredProcess, code: int) -> None:
        now = time.monotonic()
        cfg = self.config
        child.exit_code, child.process, child.state = code, None, "restarting"
        while child.restarts and now - child.restarts[0] > cfg.restart_window_s:
            child.restarts.popleft()
        if len(child.restarts) >= cfg.max_restarts:
            error = child.stats.get("last_error") or exit_reason(code)
            if self._service_failed(
                child,
                f"failed {len(child.restarts) + 1} times within "
                f"{cfg.restart_window_s:.0f}s (last: {error})",
            ):
                return
            self.failure = (
                f"stage {child.name} failed {len(child.restarts) + 1} times within "
                f"{cfg.restart_window_s:.0f}s (last: {error}); giving up. Fix the "
                "cause and run again (supervisor.max_restarts sets the limit)"
            )
            log.error("%s", self.failure)
            child.state = "failed"
            self.failed = True
            return
        delay = min(
            cfg.restart_backoff_s * 2 ** len(child.restarts), cfg.restart_backoff_max_s
        )
        child.restarts.append(now)
        child.next_start = now + delay
        self.restart_count += 1
        log.warning("restarting %s in %.1fs", child.name, delay)
        for name in self.roles.restart_with.get(child.name, ()):
            self._restart_along(self.children[name], child.next_start)

    def _restart_along(self, child: MonitoredProcess, at: float) -> None:
        """Restart ``child`` with another stage (not counted against its cap)."""
        if child.process is not None and child.alive:
            child.process.kill()
            child.process.wait()
        log.info("restarting %s with it", child.name)
        child.process, child.exit_code, child.state = None, None, "restarting"
        child.next_start = at

    def _all_done(self) -> bool:
        return all(
            c.state == "done" or (c.state == "failed" and c.name in self.services)
            for c in self.children.values()
        )

    def _terminal_done(self) -> bool:
        return bool(self.terminal) and all(
            self.children[n].state == "done" for n in self.terminal
        )

    def _end_streams(self, control: zmq.Socket[Any], stop_deadline: float) -> None:
        """Stop the way a clip ends: SIGUSR1 ends every stream at decode (and every
        capture, whose own end decode now reads and drops), the end of stream
        travels down the chain with the frames already decoded, track writes its
        last events, and the sinks finish and exit. Only then do the other stages
        get SIGTERM; all finished by then, they exit at once.

        SIGTERM to every stage at once lost that end: a stage that passed it on
        exited at once, libzmq dropped what it had queued, and every stage behind
        waited out its drain deadline (8 s) and exited without its last events.
        This takes at most half of ``stop_timeout_s``; a chain that has not ended
        by then gets SIGTERM as before. Skipped unless every capture and decode
        is running (a stage still starting has no SIGUSR1 handler yet)."""
        ending = [
            self.children[n] for n in self.roles.ends_streams if n in self.children
        ]
        if not self.terminal or not ending:
            return
        if not all(c.alive and c.state == "running" for c in ending):
            return
        for child in ending:
            assert child.process is not None
            child.process.send_signal(signal.SIGUSR1)
        deadline = stop_deadline - self.config.stop_timeout_s / 2
        while not self._inputs_ended() and time.monotonic() < deadline:
            self._receive(control, WATCH_INTERVAL_S)
            self._watchdog()
            for child in self.children.values():
                code = child.process.poll() if child.process else None
                if code is not None and child.exit_code is None:
                    child.exited(code)  # its last heartbeat said "stopped"
        if not self._inputs_ended():
            log.warning(
                "the chain did not end within %.0fs: stopping every stage",
                self.config.stop_timeout_s / 2,
            )

    def _inputs_ended(self) -> bool:
        """Every sink has exited, or has every stream's end and so nothing more
        in flight towards it (a network sink may still be delivering its spool)."""
        return bool(self.terminal) and all(
            self.children[n].state == "done"
            or read_stats(self.children[n].stats, RuntimeStats).input_ended
            for n in self.terminal
        )

    def _stop_all(self, control: zmq.Socket[Any], deadline: float) -> None:
        """SIGTERM every live stage, let them drain, SIGKILL what is left by
        ``deadline``."""
        live = [c for c in self.children.values() if c.alive]
        for child in live:
            child.state = "stopping"
            assert child.process is not None
            child.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        while any(c.alive for c in live) and time.monotonic() < deadline:
            self._receive(control)
            self._watchdog()
        for child in live:
            assert child.process is not None
            if child.alive:
                log.warning(
                    "stage %s ignored SIGTERM for %.0fs: killing it",
                    child.name,
                    time.monotonic() - signalled,
                )
                child.process.kill()
            child.exited(child.process.wait())
        self._receive(control)
