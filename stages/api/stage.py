"""The API service's process: uvicorn serving ``stages.api.app`` from a thread,
while the runtime's loop takes the previews and sends heartbeats. The socket
is bound here first, so a port in use is one line, not a thread's traceback."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pipeline.errors import PermanentError
from pipeline.messages import Detected
from pipeline.stage import Emit, Received, Stage
from stages.api.app import ApiSettings
from stages.api.live import LivePictures
from stages.api.stats import ApiStats

log = logging.getLogger(__name__)


class ApiStage(Stage):
    max_batch = 256

    def __init__(self, listen: str, settings: Callable[[], ApiSettings]) -> None:
        """``settings``: built in this process (FastAPI is imported only here)."""
        self.listen = listen
        self._settings = settings
        self._stats = ApiStats()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._live: LivePictures | None = None
        self._built: ApiSettings | None = None

    def setup(self) -> None:
        import uvicorn

        from stages.api.app import build_app

        settings = self._settings()
        settings.stats = self._stats
        self._live = settings.live
        self._built = settings
        host, _, port = self.listen.rpartition(":")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP named: asyncio sets TCP_NODELAY on the connections of a
        # socket made so only, and without it every answer on a kept-alive
        # connection waited 40 ms for the client's delayed ACK (bench api)
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host or "0.0.0.0", int(port)))  # noqa: S104
        except OSError as e:
            sock.close()
            raise PermanentError(
                f"cannot serve the API on {self.listen}: {e.strerror}; choose "
                "another http.listen"
            ) from e
        sock.listen(128)
        config = uvicorn.Config(
            build_app(settings),
            log_level="warning",
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=3,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise PermanentError(f"the API did not start on {self.listen}")
            time.sleep(0.02)
        bound = sock.getsockname()
        self._stats.listening = f"{bound[0]}:{bound[1]}"
        log.info("API on http://%s", self._stats.listening)

    def process(self, batch: Sequence[Received]) -> Iterable[Emit]:
        """Previews are drawn for the live pictures (the event stream follows
        the store, not a feed)."""
        live = self._live
        for item in batch:
            if item.port == "preview" and live is not None:
                if isinstance(item.message, Detected) and item.message.pixels:
                    live.offer(item.message, item.parts)
        if live is not None:
            self._stats.pictures_drawn = live.drawn
            self._stats.previews_refused = live.refused
        return ()

    def tick(self, now: float) -> Iterable[Emit]:
        if self._thread is not None and not self._thread.is_alive():
            raise RuntimeError("the API's server thread ended")
        return ()

    def stats(self) -> ApiStats:
        return self._stats

    def close(self) -> None:
        if self._built is not None:
            self._built.closing = True  # streams end within a second
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(5)
