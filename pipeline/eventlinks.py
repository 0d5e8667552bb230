"""Links to an event's media on the HTTP API: the paths the API serves them on,
and the URLs events carry (``snapshot_url``, ``clip_url``) so that an MQTT or
webhook consumer on another machine can fetch them. The one place the paths
are spelled."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

SNAPSHOT = "snapshot.jpg"
CLIP = "clip.mp4"
ROUTE = "/api/events/{event_id}/"
"""The API's route of an event's media, before the media's name."""


def event_path(event_id: str, media: str) -> str:
    """``/api/events/<id>/<media>``, the id quoted for a URL path."""
    return ROUTE.format(event_id=quote(event_id, safe=":")) + media


@dataclass(frozen=True, slots=True)
class EventLinks:
    """The URLs of one camera's events' media under the API's ``base`` URL."""

    base: str
    clipped: Callable[[str, int], bool] | None = None
    """Whether an event of (kind, track id) gets a clip; None: no clips."""

    def snapshot(self, event_id: str) -> str:
        return self.base + event_path(event_id, SNAPSHOT)

    def clip(self, event_id: str, kind: str, track_id: int) -> str:
        """The clip's URL, or '' when the event gets none."""
        if self.clipped is None or not self.clipped(kind, track_id):
            return ""
        return self.base + event_path(event_id, CLIP)
