"""The API's pictures: each camera's live annotated picture (latest.jpg,
stream.mjpeg, from ``stages.api.live``), each event's snapshot, served only from
the camera's snapshot folder, and each event's clip (``stages.record``)."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse

from pipeline.eventlinks import CLIP, ROUTE, SNAPSHOT
from stages.api.models import Problem, problem
from stages.record.config import clip_path, wants_clip
from stages.sinks import eventstore

if TYPE_CHECKING:
    from stages.api.app import ApiSettings

BOUNDARY = "framechainframe"
PICTURE_WAIT_S = 5.0
"""How long latest.jpg waits for a picture when it has none fresh (the first
preview comes within a check of the demand file and a frame)."""
FRESH_S = 2.0
NO_STORE = {"Cache-Control": "no-store"}
CLIP_LATE_S = 30.0
"""A clip not there this long after its post-roll: the recorder did not make it."""
MP4: dict[int | str, dict[str, Any]] = {
    200: {"content": {"video/mp4": {}}, "description": "An MP4 clip."}
}
JPEG: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/jpeg": {}}, "description": "A JPEG picture."}
}


def add_picture_routes(
    app: FastAPI, settings: ApiSettings, errors: dict[int | str, dict[str, Any]]
) -> None:
    board, live = settings.board, settings.live

    def unknown_camera(name: str) -> Response | None:
        if name in board.names():
            return None
        return problem(404, f"no camera {name!r}; known: {', '.join(board.names())}")

    def not_running() -> Response | None:
        if board.snapshot() is None:
            return problem(503, "the chain's supervisor is not running")
        return None

    @app.get(
        "/api/cameras/{name}/latest.jpg",
        response_class=Response,
        responses={**JPEG, **errors},
    )
    async def latest_picture(name: str) -> Response:
        """The camera's newest annotated picture (boxes, track ids, lines with
        their counts, zones with their occupancy), at http.preview's size."""
        refusal = unknown_camera(name) or not_running()
        if refusal is not None:
            return refusal
        live.want(name)
        picture = live.latest(name)
        if picture is None or time.monotonic() - picture.made > FRESH_S:
            seq = picture.seq if picture is not None else 0
            picture = await live.newer(name, seq, PICTURE_WAIT_S)
        if picture is None:
            detail = (
                f"no picture from camera {name!r} in {PICTURE_WAIT_S:.0f} s: it is "
                f"{board.state(name)}"
            )
            return JSONResponse(
                {"detail": detail}, status_code=503, headers={"Retry-After": "2"}
            )
        return Response(picture.jpeg, media_type="image/jpeg", headers=NO_STORE)

    @app.get(
        "/api/cameras/{name}/stream.mjpeg",
        response_class=StreamingResponse,
        responses={
            200: {
                "content": {f"multipart/x-mixed-replace; boundary={BOUNDARY}": {}},
                "description": "Each new annotated picture as a JPEG part.",
            },
            429: {"model": Problem},
            **errors,
        },
    )
    async def live_stream(name: str, request: Request) -> Response:
        """The camera's annotated pictures as they are drawn, at most
        http.preview.fps a second; at most http.preview.streams_per_client open
        at once per client address."""
        refusal = unknown_camera(name) or not_running()
        if refusal is not None:
            return refusal
        client = request.client.host if request.client is not None else ""
        if not live.slots.take(client):
            return problem(
                429,
                f"{live.config.streams_per_client} live streams are open from "
                f"{client} (http.preview.streams_per_client); close one first",
            )
        settings.stats.live_streams = live.slots.total()

        async def parts() -> AsyncIterator[bytes]:
            seq = 0
            try:
                while not settings.closing:
                    live.want(name)
                    picture = await live.newer(name, seq, 1.0)
                    if picture is None:
                        continue
                    seq = picture.seq
                    yield (
                        f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                        f"Content-Length: {len(picture.jpeg)}\r\n\r\n".encode()
                        + picture.jpeg
                        + b"\r\n"
                    )
            finally:
                live.slots.give_back(client)
                settings.stats.live_streams = live.slots.total()

        return StreamingResponse(
            parts(),
            media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
            headers=NO_STORE,
        )

    @app.get(
        ROUTE + SNAPSHOT,
        response_class=FileResponse,
        responses={**JPEG, **errors},
    )
    def event_snapshot(event_id: str) -> Response:
        """The best crop of the event's track, as the event stored it."""
        rows = eventstore.query(settings.store, eventstore.Query(ids=(event_id,)))
        if not rows:
            return problem(404, f"no event {event_id!r}")
        event = rows[0]
        path, camera = event["snapshot"], event["stream_id"]
        if not path:
            return problem(
                404,
                f"event {event_id!r} has no snapshot (snapshots are off for camera "
                f"{camera!r}, or the event has no track)",
            )
        folder = settings.snapshot_dirs.get(camera)
        file = Path(path).resolve()
        if folder is None or not file.is_relative_to(folder):
            # a store written under another config, or a forged row: never
            # serve a file from anywhere but the camera's snapshot folder
            return problem(
                404,
                f"event {event_id!r}'s snapshot is not in camera {camera!r}'s "
                "snapshot folder (cameras.<name>.snapshots.directory)",
            )
        if not file.is_file():
            return problem(
                404, f"event {event_id!r}'s snapshot was deleted (retention)"
            )
        return FileResponse(file, media_type="image/jpeg", headers=NO_STORE)

    @app.get(
        ROUTE + CLIP,
        response_class=FileResponse,
        responses={**MP4, **errors},
    )
    def event_clip(event_id: str) -> Response:
        """The event's clip, from clips.pre_s before it to post_s after, copied
        from the camera's stream. 404 with Retry-After while its post-roll is
        still being recorded."""
        rows = eventstore.query(settings.store, eventstore.Query(ids=(event_id,)))
        if not rows:
            return problem(404, f"no event {event_id!r}")
        event = rows[0]
        camera = event["stream_id"]
        clips = settings.clips.get(camera)
        if clips is None or not wants_clip(clips, event["kind"], event["track_id"]):
            return problem(
                404,
                f"event {event_id!r} gets no clip (cameras.{camera}.clips is off, "
                "or its kinds leave this one out)",
            )
        path = clip_path(clips.directory, camera, event_id)
        if path.is_file():
            return FileResponse(path, media_type="video/mp4", headers=NO_STORE)
        ready = event["capture_ts"] + clips.post_s
        if time.time() < ready + CLIP_LATE_S:
            wait = max(1, math.ceil(ready - time.time()) + 1)
            return JSONResponse(
                {
                    "detail": f"the clip of {event_id!r} is being recorded; "
                    f"try again in {wait} s"
                },
                status_code=404,
                headers={"Retry-After": str(wait)},
            )
        return problem(
            404,
            f"the clip of {event_id!r} is not there: deleted by retention, or not "
            "recorded (the recorder was down; see framechain_clips_missed_total)",
        )
