"""Readers for live sources: RTSP and HTTP(S)/HLS through PyAV, MJPEG over HTTP, and
USB/V4L2 through OpenCV. A reader opens one connection and yields compressed (or raw)
packets until it fails; it never retries on its own (the capture stage owns reconnects)
and every error it raises is a ``SourceError`` whose ``reason`` is one of
``refused``, ``dns``, ``timeout``, ``stalled``, ``auth_failed``, ``eof``, ``error``,
with the URL's credentials redacted."""

from __future__ import annotations

import http.client
import socket
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pipeline.errors import SourceError
from pipeline.log import redact


class SourceFailure(SourceError):
    """A live source failed; ``reason`` says how, for the offline event."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(redact(message))
        self.reason = reason


@dataclass(frozen=True, slots=True)
class StreamInfo:
    codec: str
    width: int
    height: int
    fps: float
    extradata: bytes | None


@dataclass(frozen=True, slots=True)
class RawPacket:
    payload: bytes
    pts: float | None
    keyframe: bool
    dts: float | None = None


def classify(error: BaseException, opened: bool) -> SourceFailure:
    """Map a PyAV/OS error to an offline reason (and a redacted message)."""
    import av

    text = str(error)
    if isinstance(error, av.error.HTTPUnauthorizedError | av.error.HTTPForbiddenError):
        return SourceFailure("auth_failed", f"authentication failed: {text}")
    if isinstance(error, ConnectionRefusedError):
        return SourceFailure("refused", f"connection refused: {text}")
    if isinstance(error, av.error.ExitError | TimeoutError | av.error.TimeoutError):
        reason = "stalled" if opened else "timeout"
        return SourceFailure(reason, f"no data within the deadline: {text}")
    if isinstance(error, av.error.EOFError | EOFError):
        return SourceFailure("eof", f"stream ended: {text}")
    return SourceFailure("error", f"{type(error).__name__}: {text}")


def unresolvable(url: str) -> str:
    """Why the URL's host does not resolve ("" when it does, or is an address):
    FFmpeg reports a name that does not resolve as an I/O error."""
    host = urllib.parse.urlsplit(url).hostname
    if not host:
        return ""
    try:
        socket.getaddrinfo(host, None)
    except socket.gaierror as e:
        return f"cannot resolve host {host}: {e.strerror}; check the name and DNS"
    except (OSError, UnicodeError):
        return ""
    return ""


class AvReader:
    """RTSP, HTTP(S) progressive and HLS through PyAV's demuxer (FFmpeg)."""

    def __init__(
        self,
        url: str,
        open_timeout_s: float,
        read_timeout_s: float,
        transport: str | None = None,
        pace: bool = False,
    ) -> None:
        self.url = url
        self.timeouts = (open_timeout_s, read_timeout_s)
        self.options = {"rtsp_transport": transport} if transport else {}
        self.pace = pace
        self._clock: tuple[float, float] | None = None  # (monotonic, pts) origin
        self._container: Any = None
        self._stream: Any = None

    def open(self) -> StreamInfo:
        import av

        started = time.monotonic()
        try:
            self._container = av.open(
                self.url, "r", options=self.options, timeout=self.timeouts
            )
        except (av.error.FFmpegError, OSError) as e:
            unresolved = unresolvable(self.url)
            if unresolved:
                raise SourceFailure("dns", unresolved) from None
            if time.monotonic() - started >= self.timeouts[0] - 0.1:
                # FFmpeg reports a silent server as "invalid data" once the deadline
                # interrupts it; what the user needs to know is that it timed out.
                raise SourceFailure(
                    "timeout",
                    f"no answer within {self.timeouts[0]}s: {redact(self.url)}",
                ) from None
            raise classify(e, opened=False) from None
        if not self._container.streams.video:
            self.close()
            raise SourceFailure("error", f"{redact(self.url)} has no video stream")
        self._stream = self._container.streams.video[0]
        ctx = self._stream.codec_context
        rate = self._stream.average_rate or self._stream.guessed_rate or 25
        return StreamInfo(
            ctx.name,
            ctx.width,
            ctx.height,
            float(rate),
            bytes(ctx.extradata) if ctx.extradata else None,
        )

    def packets(self) -> Iterator[RawPacket]:
        import av

        try:
            for packet in self._container.demux(self._stream):
                if packet.size == 0:
                    continue
                if self.pace and packet.pts is not None:
                    self._wait_until(float(packet.pts * packet.time_base))
                pts = (
                    float(packet.pts * packet.time_base)
                    if packet.pts is not None
                    else None
                )
                dts = (
                    float(packet.dts * packet.time_base)
                    if packet.dts is not None
                    else None
                )
                yield RawPacket(bytes(packet), pts, bool(packet.is_keyframe), dts)
        except (av.error.FFmpegError, OSError) as e:
            raise classify(e, opened=True) from None
        raise SourceFailure("eof", "the stream ended")

    def _wait_until(self, pts: float) -> None:
        """Hold a packet until its presentation time, for sources (HLS, files over
        HTTP) that deliver faster than real time; a jump in time restarts the clock."""
        now = time.monotonic()
        if (
            self._clock is None
            or not -1.0 < pts - self._clock[1] - (now - self._clock[0]) < 5
        ):
            self._clock = (now, pts)
            return
        delay = pts - self._clock[1] - (now - self._clock[0])
        if delay > 0:
            time.sleep(delay)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


class MjpegReader:
    """``multipart/x-mixed-replace`` JPEG streams (IP cameras' MJPEG over HTTP)."""

    def __init__(self, url: str, open_timeout_s: float, read_timeout_s: float) -> None:
        self.url = url
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self._connection: http.client.HTTPConnection | None = None
        self._response: http.client.HTTPResponse | None = None
        self._boundary = b""
        self._started = 0.0

    def open(self) -> StreamInfo:
        parts = urllib.parse.urlsplit(self.url)
        connection_class = (
            http.client.HTTPSConnection
            if parts.scheme == "https"
            else http.client.HTTPConnection
        )
        host = parts.hostname or "localhost"
        self._connection = connection_class(
            host, parts.port, timeout=self.open_timeout_s
        )
        headers = {}
        if parts.username is not None:
            import base64

            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        try:
            self._connection.request("GET", path, headers=headers)
            response = self._connection.getresponse()
        except ConnectionRefusedError as e:
            raise SourceFailure(
                "refused", f"connection refused: {redact(self.url)}"
            ) from e
        except socket.gaierror:
            raise SourceFailure("dns", unresolvable(self.url) or str(host)) from None
        except (TimeoutError, OSError, http.client.HTTPException) as e:
            raise SourceFailure("timeout", f"{redact(self.url)}: {e}") from e
        if response.status in (401, 403):
            raise SourceFailure(
                "auth_failed", f"{redact(self.url)}: HTTP {response.status}"
            )
        content_type = response.getheader("Content-Type", "")
        if response.status != 200 or "multipart" not in content_type:
            raise SourceFailure(
                "error",
                f"{redact(self.url)}: HTTP {response.status}, "
                f"{content_type!r} is not an MJPEG multipart stream",
            )
        boundary = content_type.partition("boundary=")[2].strip().strip('"')
        self._boundary = b"--" + boundary.removeprefix("--").encode()
        self._response = response
        if self._connection.sock is not None:
            self._connection.sock.settimeout(self.read_timeout_s)
        self._started = time.monotonic()
        return StreamInfo("mjpeg", 0, 0, 0.0, None)

    def packets(self) -> Iterator[RawPacket]:
        assert self._response is not None
        response = self._response
        try:
            while True:
                line = response.readline()
                if not line:
                    raise SourceFailure("eof", "the MJPEG stream ended")
                if not line.startswith(self._boundary):
                    continue
                length = None
                while header := response.readline().strip():
                    name, _, value = header.decode("latin-1").partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                if length is None:
                    raise SourceFailure("error", "MJPEG part without Content-Length")
                payload = response.read(length)
                if len(payload) < length:
                    raise SourceFailure("eof", "the MJPEG stream ended mid-frame")
                yield RawPacket(payload, time.monotonic() - self._started, True)
        except TimeoutError as e:
            raise SourceFailure(
                "stalled", f"no MJPEG data within {self.read_timeout_s}s"
            ) from e
        except (OSError, http.client.HTTPException, ValueError) as e:
            raise SourceFailure("error", f"MJPEG read failed: {e}") from e

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class UsbReader:
    """USB/V4L2 cameras through OpenCV. Frames arrive decoded (BGR); they travel as
    ``rawvideo`` packets so decode applies the same sampling and resize."""

    def __init__(
        self,
        device: str | int,
        pixel_format: str | None,
        width: int | None,
        height: int | None,
        fps: float | None,
        backend: int | None = None,
    ) -> None:
        self.device = device
        self.pixel_format = pixel_format
        self.size = (width, height)
        self.fps = fps
        self.backend = backend
        self._capture: Any = None
        self._first: Any = None
        self._started = 0.0

    def open(self) -> StreamInfo:
        import cv2

        backend = self.backend if self.backend is not None else cv2.CAP_V4L2
        capture = cv2.VideoCapture(self.device, backend)
        if not capture.isOpened():
            capture.release()
            raise SourceFailure(
                "refused",
                f"cannot open video device {self.device!r}; "
                "check the path and that this user is in the video group",
            )
        if self.pixel_format:
            capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*self.pixel_format))
        if self.size[0] and self.size[1]:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
        if self.fps:
            capture.set(cv2.CAP_PROP_FPS, self.fps)
        self._capture = capture
        self._started = time.monotonic()
        ok, first = capture.read()  # the size that frames really have, not the request
        if not ok:
            self.close()
            raise SourceFailure(
                "timeout", f"video device {self.device!r} delivered no frame"
            )
        self._first = first
        fps = float(capture.get(cv2.CAP_PROP_FPS) or self.fps or 30.0)
        return StreamInfo("rawvideo", first.shape[1], first.shape[0], fps, None)

    def packets(self) -> Iterator[RawPacket]:
        frame = self._first
        while True:
            if frame.shape[:2] != self._first.shape[:2]:
                raise SourceFailure(
                    "error", "the device changed its frame size; reopening"
                )
            yield RawPacket(frame.tobytes(), time.monotonic() - self._started, True)
            ok, frame = self._capture.read()
            if not ok:
                raise SourceFailure(
                    "eof", f"video device {self.device!r} stopped delivering"
                )

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
