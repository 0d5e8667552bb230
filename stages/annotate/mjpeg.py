"""A small MJPEG server: the latest annotated frame of one camera, for a browser.

``GET /`` is a page showing the stream, ``GET /stream.mjpg`` the
multipart/x-mixed-replace stream, ``GET /snapshot.jpg`` one frame. Frames are
JPEG-encoded only while someone watches, so an unwatched camera costs nothing here.
It binds to loopback unless configured otherwise: there is no authentication, so
expose it through a reverse proxy that has some.
"""

from __future__ import annotations

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

BOUNDARY = "framechainframe"
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>framechain: {camera}</title>
<style>body{{margin:0;background:#111;color:#eee;font:14px sans-serif}}
img{{display:block;max-width:100vw;max-height:calc(100vh - 24px)}}</style></head>
<body><div>framechain · {camera}</div><img id="live" src="stream.mjpg" alt="{camera}">
</body></html>
"""


class LatestFrame:
    """The newest JPEG and who is waiting for it."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._jpeg = b""
        self._seq = 0
        self._viewers = 0
        self._wanted_until = 0.0

    @property
    def wanted(self) -> bool:
        """Whether the producer should encode frames now."""
        return self._viewers > 0 or time.monotonic() < self._wanted_until

    def publish(self, jpeg: bytes) -> None:
        with self._condition:
            self._jpeg, self._seq = jpeg, self._seq + 1
            self._condition.notify_all()

    def wait_newer(self, seq: int, timeout: float) -> tuple[int, bytes]:
        with self._condition:
            self._condition.wait_for(lambda: self._seq > seq, timeout)
            return self._seq, self._jpeg

    def watch(self, delta: int) -> None:
        with self._condition:
            self._viewers += delta

    def want_soon(self, seconds: float = 3.0) -> None:
        self._wanted_until = time.monotonic() + seconds


class _Handler(BaseHTTPRequestHandler):
    server: MjpegServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("mjpeg %s: " + format, self.client_address[0], *args)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", self.server.page)
        elif path == "/stream.mjpg":
            self._stream()
        elif path == "/snapshot.jpg":
            latest = self.server.latest
            latest.want_soon()
            _, jpeg = latest.wait_newer(0, 5.0)
            if jpeg:
                self._send(200, "image/jpeg", jpeg)
            else:
                self._send(503, "text/plain", b"no frame yet\n")
        else:
            self._send(404, "text/plain", b"not found\n")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _stream(self) -> None:
        latest = self.server.latest
        self.send_response(200)
        self.send_header(
            "Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}"
        )
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        latest.watch(+1)
        seq = 0
        try:
            while not self.server.closing:
                seq, jpeg = latest.wait_newer(seq, 1.0)
                if not jpeg:
                    continue
                self.wfile.write(
                    f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(jpeg)}\r\n\r\n".encode()
                    + jpeg
                    + b"\r\n"
                )
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the viewer went away
        finally:
            latest.watch(-1)


class MjpegServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, camera: str) -> None:
        super().__init__((host, port), _Handler)
        self.latest = LatestFrame()
        self.page = PAGE.format(camera=camera).encode()
        self.closing = False
        self._thread = threading.Thread(
            target=self.serve_forever, name="mjpeg", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.closing = True
        self.shutdown()
        self.server_close()
