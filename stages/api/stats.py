"""What the API service reports in its heartbeats."""

from __future__ import annotations

import msgspec


class ApiStats(msgspec.Struct, kw_only=True):
    requests: int = 0
    unauthorized: int = 0  # answered 401
    server_errors: int = 0  # answered 5xx
    listening: str = ""  # host:port once serving
    pictures_drawn: int = 0  # live pictures drawn from the track stages' previews
    live_streams: int = 0  # stream.mjpeg answers open now
    previews_refused: int = 0  # previews whose parts did not fit their header
