"""Drives one stage in its own process: sockets, batching, backpressure, heartbeats,
signals and the exit status. The same entry point serves the supervisor and
``framechain stage NAME``."""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from types import FrameType
from typing import Any

import zmq

from pipeline.errors import ConfigError, FramechainError, MessageError, PermanentError
from pipeline.messages import Detected, Heartbeat, Mark, Packet
from pipeline.payload import check_stream
from pipeline.processes import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PERMANENT,
    StageState,
)
from pipeline.recording import Recorder
from pipeline.stage import Emit, Received, Stage, drain_fd
from pipeline.stageplan import RuntimeStats, StagePlan, merged_stats
from pipeline.transport import Endpoint, LinkOptions, make_socket, receive, send

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 0.5
# The longest an idle loop sleeps; signals, inputs and doorbells wake it sooner.
MAX_IDLE_S = 0.5


def _control(uri: str, linger_ms: int) -> Endpoint:
    """The link a stage's heartbeats take to the supervisor."""
    return Endpoint("control", zmq.PUSH, uri, False, LinkOptions(8, linger_ms))


class _Stopping(Exception):
    """Raised inside a blocked send when the drain deadline has passed."""


class StageRuntime:
    """Runs ``plan`` until its stage finishes, fails, or is stopped."""

    def __init__(self, plan: StagePlan, control_uri: str | None) -> None:
        self.plan = plan
        self.control_uri = control_uri
        self.context: zmq.Context[Any] = zmq.Context()
        self.inputs: dict[str, zmq.Socket[Any]] = {}
        self.network_ports: set[str] = set()  # inputs on tcp://
        self.outputs: dict[str, list[zmq.Socket[Any]]] = defaultdict(list)
        self.control: zmq.Socket[Any] | None = None
        self.stop_requested = False
        self.end_requested = False
        self.reload_requested = False
        self.drain_deadline = float("inf")
        self.next_heartbeat = 0.0
        self.counters: dict[str, int] = defaultdict(int)
        self.dropped: dict[str, int] = defaultdict(int)  # lossy output port -> n
        self._lossy: set[str] = set()  # lossy ports and their routed names
        self._best_effort: set[str] = set()  # likewise, any message dropped
        self.state: StageState = "starting"
        self.stage: Stage | None = None
        self._authenticator: Any = None
        self.recorders: dict[str, Recorder] = {}
        # read ends of pipes that end a wait early: the signal wake-up pipe
        # (``watch_signals``) and the stage's doorbell
        self.wake_fds: list[int] = []
        self._pollers: dict[tuple[Any, ...], zmq.Poller] = {}
        self.last_error = ""
        self._progress = (-1, False)
        self._progress_since = time.monotonic()

    def watch_signals(self) -> None:
        """Let a stop or reload signal end the loop's sleep at once rather than at its
        next timeout (main thread only: Python writes the signal number here)."""
        read, write = os.pipe()
        os.set_blocking(read, False)
        os.set_blocking(write, False)
        signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        self.wake_fds.append(read)

    # -- lifecycle -----------------------------------------------------------------
    def request_stop(self, signum: int, _frame: FrameType | None) -> None:
        if not self.stop_requested:
            log.debug("received %s: draining", signal.Signals(signum).name)
            # Set here, not in the loop: a send blocked on a dead peer must time
            # out too.
            self.drain_deadline = time.monotonic() + self.plan.drain_timeout_s
        self.stop_requested = True

    def request_end(self, _signum: int, _frame: FrameType | None) -> None:
        """SIGUSR1: end the stream now, the way a clip's end does, and stay up. The
        supervisor stops a chain this way, decode first (see ``Supervisor``)."""
        self.end_requested = True

    def request_reload(self, _signum: int, _frame: FrameType | None) -> None:
        self.reload_requested = True

    def run(self) -> int:
        try:
            self._open_sockets()
            self.recorders = {p: Recorder(path) for p, path in self.plan.record.items()}
            self._heartbeat(force=True)
            self.stage = self.plan.build()
            self.stage.outputs_ready(self._writable)
            self._setup(self.stage)
            self.wake_fds += self.stage.wake_fds()
            self.state = "running"
            self._heartbeat(force=True)
            self._loop(self.stage)
            return EXIT_OK
        except _Stopping:
            log.warning("drain deadline passed; exiting with work in flight")
            return EXIT_OK
        except (FramechainError, OSError) as e:
            log.error("%s", e)
            self.last_error = str(e)
            if isinstance(e, ConfigError):
                return EXIT_CONFIG
            return EXIT_PERMANENT if isinstance(e, PermanentError) else EXIT_FAILED
        except Exception as e:
            # Not bad input but a bug: keep the traceback, the supervisor restarts us.
            log.exception("stage %s failed", self.plan.name)
            self.last_error = f"{type(e).__name__}: {e}"
            return EXIT_FAILED
        finally:
            self.state = "stopped"
            self._close()

    def _open_sockets(self) -> None:
        allowed = {
            e.curve.allowed_dir
            for e in self.plan.endpoints
            if e.curve is not None and e.bind and e.curve.allowed_dir
        }
        if allowed:
            # ZAP handler: CURVE servers in this process admit only the listed keys.
            from zmq.auth.thread import ThreadAuthenticator

            self._authenticator = ThreadAuthenticator(self.context)
            self._authenticator.start()
            for directory in allowed:
                self._authenticator.configure_curve(domain="*", location=directory)
        for endpoint in self.plan.endpoints:
            sock = make_socket(self.context, endpoint)
            if endpoint.socket_type == zmq.PULL:
                self.inputs[endpoint.port] = sock
                if endpoint.uri.startswith("tcp://"):
                    self.network_ports.add(endpoint.port)
            else:
                for port in (endpoint.port, *endpoint.aliases):
                    self.outputs[port].append(sock)
                    if endpoint.port in self.plan.lossy_ports:
                        self._lossy.add(port)
                    if endpoint.port in self.plan.best_effort_ports:
                        self._best_effort.add(port)
        if self.control_uri:
            self.control = make_socket(self.context, _control(self.control_uri, 200))

    def _close(self) -> None:
        if self.stage is not None:
            try:
                self.stage.close()
            except Exception:
                log.exception("error while closing stage")
        self._heartbeat(force=True)  # flushes the recorders: close them after it
        for recorder in self.recorders.values():
            recorder.close()
        if self._authenticator is not None:
            self._authenticator.stop()
        self.context.destroy()  # each socket's own LINGER applies

    # -- main loop -----------------------------------------------------------------
    def _loop(self, stage: Stage) -> None:
        stopped = ended = False
        next_tick = 0.0
        while True:
            now = time.monotonic()
            if self.stop_requested and not stopped:
                stopped = True
                self.state = "stopping"
            if (stopped or self.end_requested) and not ended:
                ended = True  # stage.stop() once, whichever came first
                self._emit(stage.stop())
            if self.reload_requested:
                self.reload_requested = False
                stage.reload()
            if stage.finished() and (self.plan.exit_when_finished or stopped):
                return
            if stopped and not self.plan.drains:
                return
            if now > self.drain_deadline:
                raise _Stopping
            produced = self._emit(stage.produce())
            if now >= next_tick:
                self._emit(stage.tick(time.time()))
                next_tick = now + stage.tick_interval
            # Sleep until whatever comes first: the stage's timer, its next tick,
            # the next heartbeat; an input, a doorbell or a signal ends it sooner.
            wait = min(MAX_IDLE_S, next_tick - now, self.next_heartbeat - now)
            awake = stage.next_awake()
            if produced:
                wait = 0.0
            elif awake is not None:
                wait = min(wait, awake)
            batch = self._collect(stage, timeout_s=max(0.0, wait))
            if batch:
                self.counters["received"] += len(batch)
                self._emit(stage.process(batch))
            self._heartbeat()

    def _poller(self, ports: tuple[str, ...], wake: bool) -> zmq.Poller:
        """One poller per set of readable ports (built once: a stage's flow
        control switches between a few sets, and rebuilding costs per message)."""
        key = (ports, wake)
        poller = self._pollers.get(key)
        if poller is None:
            poller = zmq.Poller()
            for port in ports:
                poller.register(self.inputs[port], zmq.POLLIN)
            for fd in self.wake_fds if wake else ():
                poller.register(fd, zmq.POLLIN)
            self._pollers[key] = poller
        return poller

    def _collect(self, stage: Stage, timeout_s: float) -> list[Received]:
        """Receive up to ``max_batch`` messages, waiting at most ``timeout_s`` for the
        first and ``max_wait_s`` more for the rest of a batch. A doorbell or a signal
        ends the wait for the first message (the loop then produces or stops)."""
        batch: list[Received] = []
        deadline = None
        while len(batch) < stage.max_batch:
            ports = tuple(p for p in self.inputs if stage.accepts(p))
            first = deadline is None
            if not ports and not first:
                break
            if first:
                wait = timeout_s
            else:
                assert deadline is not None
                wait = max(0.0, deadline - time.monotonic())
            ready = dict(self._poller(ports, first).poll(math.ceil(wait * 1000)))
            if not ready:
                break
            woken = False
            for fd in self.wake_fds:
                if fd in ready:
                    drain_fd(fd)
                    woken = True
            for port in ports:
                sock = self.inputs[port]
                while sock in ready and len(batch) < stage.max_batch:
                    try:
                        network = port in self.network_ports
                        message, parts = receive(sock, zmq.NOBLOCK, network)
                        check_stream(message, port, stage.serves_on)
                    except zmq.Again:
                        break
                    except MessageError as e:
                        self._invalid(port, e)
                        continue
                    batch.append(Received(port, message, parts))
                    if port in self.recorders:
                        self.recorders[port].write(message, parts)
                    if not stage.accepts(port):
                        break
            if woken and not batch:
                break
            if deadline is None:
                deadline = time.monotonic() + stage.max_wait_s
            if stage.max_wait_s <= 0 or time.monotonic() >= deadline:
                break
        return batch

    def _writable(self, port: str) -> bool:
        return all(s.poll(0, zmq.POLLOUT) for s in self.outputs.get(port, ()))

    def _emit(self, emits: Iterable[Emit]) -> bool:
        sent = False
        for emit in emits:
            sockets = self.outputs.get(emit.port)
            if not sockets:
                raise RuntimeError(f"stage emitted on unknown port {emit.port!r}")
            for sock in sockets:
                self._send(emit, sock)
            sent = True
        return sent

    def _send(self, emit: Emit, sock: zmq.Socket[Any]) -> None:
        # Only media (packets, annotated frames), marks (sent again every second
        # until answered; a sink gone at the end would hold us) and what goes to
        # a service (best effort: it must never hold the chain) are ever dropped.
        lossy = (
            isinstance(emit.message, Mark)
            or emit.port in self._best_effort
            or (
                emit.port in self._lossy and isinstance(emit.message, Packet | Detected)
            )
        )
        while True:
            try:
                send(sock, emit.message, emit.parts, flags=zmq.NOBLOCK)
                self.counters["sent"] += 1
                return
            except zmq.Again:
                if lossy:
                    if not isinstance(emit.message, Mark):
                        self.dropped[emit.port] += 1
                    return
            # Blocked by a full downstream queue: wait, staying visibly alive.
            sock.poll(100, zmq.POLLOUT)
            self._heartbeat()
            if time.monotonic() > self.drain_deadline:
                raise _Stopping

    def _setup(self, stage: Stage) -> None:
        """Run the stage's setup while a helper thread keeps the supervisor's
        heartbeats coming: loading a model, or compiling a TensorRT engine into the
        cache, can take minutes, and a silent stage would be killed as hung. Setup
        itself stays on this thread, since what it opens (SQLite connections,
        sockets) belongs to the thread that will use it; the helper has a control
        socket of its own (ZeroMQ sockets are not shared between threads)."""
        if not self.control_uri:
            stage.setup()
            return
        done = threading.Event()

        def keep_alive() -> None:
            sock = make_socket(self.context, _control(self.control_uri or "", 0))
            try:
                while not done.wait(HEARTBEAT_INTERVAL_S):
                    beat = Heartbeat(
                        self.plan.name, os.getpid(), time.time(), "starting", {}
                    )
                    try:
                        send(sock, beat, flags=zmq.NOBLOCK)
                    except zmq.Again:
                        pass
            finally:
                sock.close(linger=0)

        helper = threading.Thread(target=keep_alive, name="keep-alive", daemon=True)
        helper.start()
        try:
            stage.setup()
        finally:
            done.set()
            helper.join()

    def _stalled_s(self, now: float) -> float:
        """How long the stage has had work waiting without progress."""
        if self.stage is None or self.state != "running":
            return 0.0
        done, waiting = self.stage.progress()
        if not waiting or done != self._progress[0]:
            self._progress, self._progress_since = (done, waiting), now
            return 0.0
        return now - self._progress_since

    def _invalid(self, port: str, error: MessageError) -> None:
        """Counted; logged at the 1st, 2nd, 4th, 8th … so a flood cannot fill a
        disk, unless the stage reported it itself."""
        count = self.counters["invalid_messages"] = (
            self.counters["invalid_messages"] + 1
        )
        if self.stage is not None and self.stage.refused(port, error):
            return
        if count & (count - 1) == 0:
            log.warning("dropped message %d on %s: %s", count, port, error)

    def _heartbeat(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.control is None or (not force and now < self.next_heartbeat):
            return
        self.next_heartbeat = now + HEARTBEAT_INTERVAL_S
        for recorder in self.recorders.values():
            recorder.flush()
        times = os.times()
        runtime = RuntimeStats(
            **self.counters,
            dropped=dict(self.dropped),
            cpu_s=times.user + times.system,
            input_ended=self.stage is not None and self.stage.input_ended(),
            stalled_s=self._stalled_s(now),
            last_error=self.last_error,
            problem="",  # the stage's own stats say it
        )
        own = self.stage.stats() if self.stage is not None else None
        stats = merged_stats(runtime, own)
        beat = Heartbeat(self.plan.name, os.getpid(), time.time(), self.state, stats)
        try:
            send(self.control, beat, flags=zmq.NOBLOCK)
        except zmq.Again:
            self.counters["heartbeats_dropped"] += 1


def run_stage(plan: StagePlan, control_uri: str | None) -> int:
    """Run one stage in this process until it finishes; returns the exit status."""
    runtime = StageRuntime(plan, control_uri)
    signal.signal(signal.SIGTERM, runtime.request_stop)
    # Under a supervisor, Ctrl-C (which a terminal sends to the whole process
    # group) is the supervisor's to act on: it stops the chain in order.
    interrupt = signal.SIG_IGN if control_uri else runtime.request_stop
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGUSR1, runtime.request_end)
    signal.signal(signal.SIGHUP, runtime.request_reload)
    runtime.watch_signals()
    return runtime.run()
