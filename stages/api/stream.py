"""``GET /api/events/stream``: new events as they are stored, as Server-Sent
Events, so that neither a page nor an integration polls.

Each answer follows the event store itself (read-only, by row, four times a
second), not a feed of the chain: a stored event is sent exactly once, in the
order it was stored, whatever the chain or this service went through. Each
message's ``id`` is the event's row, so a client that reconnects with
``Last-Event-ID`` (browsers' ``EventSource`` do it by themselves) goes on after
the last event it had, missing none and repeating none.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import Response, StreamingResponse

from pipeline.errors import FramechainError
from stages.api.models import Problem, problem
from stages.api.slots import ClientSlots
from stages.sinks import eventstore

if TYPE_CHECKING:
    from stages.api.app import ApiSettings

POLL_S = 0.25
KEEP_ALIVE_S = 15.0
"""A comment line this often while nothing is stored: proxies keep the answer open."""
STREAMS_PER_CLIENT = 8
PAGE = 500


def add_stream_routes(
    app: FastAPI,
    settings: ApiSettings,
    errors: dict[int | str, dict[str, Any]],
    known: Any,
) -> None:
    """``known(what, values, allowed)`` checks a filter as /api/events does."""
    slots = ClientSlots(STREAMS_PER_CLIENT)
    encode = msgspec.json.Encoder().encode

    @app.get(
        "/api/events/stream",
        response_class=StreamingResponse,
        responses={
            200: {
                "content": {"text/event-stream": {}},
                "description": "Each new stored event as one message: id is its "
                "row, data the event (as /api/events gives it).",
            },
            429: {"model": Problem},
            **errors,
        },
    )
    async def event_stream(
        request: Request,
        camera: Annotated[list[str] | None, Query()] = None,
        rule: Annotated[list[str] | None, Query()] = None,
        kind: Annotated[list[str] | None, Query()] = None,
        class_name: Annotated[list[str] | None, Query(alias="class")] = None,
        last_event_id: Annotated[
            str | None,
            Header(
                alias="Last-Event-ID",
                description="The id of the last message had: go on after it",
            ),
        ] = None,
    ) -> Response:
        """Events as they are stored, from now on (or after Last-Event-ID)."""
        try:
            cameras = set(known("camera", camera, settings.board.names()))
            kinds = set(known("kind", kind, list(settings.event_kinds)))
        except ValueError as e:
            return problem(422, str(e))
        rules, classes = set(rule or ()), set(class_name or ())
        try:
            start = (
                int(last_event_id)
                if last_event_id and last_event_id.isdigit()
                else await asyncio.to_thread(eventstore.last_row, settings.store)
            )
        except FramechainError as e:
            return problem(503, str(e))
        client = request.client.host if request.client is not None else ""
        if not slots.take(client):
            return problem(
                429,
                f"{STREAMS_PER_CLIENT} event streams are open from {client}; "
                "close one first",
            )

        def wanted(event: dict[str, Any]) -> bool:
            return (
                (not cameras or event["stream_id"] in cameras)
                and (not kinds or event["kind"] in kinds)
                and (not rules or event["rule"] in rules)
                and (not classes or event["class_name"] in classes)
            )

        async def messages() -> AsyncIterator[bytes]:
            row, quiet_since = start, time.monotonic()
            try:
                yield b"retry: 2000\n\n"
                while not settings.closing:
                    try:
                        stored = await asyncio.to_thread(
                            eventstore.stored_after, settings.store, row, PAGE
                        )
                    except FramechainError:
                        stored = []  # the store is busy or not there yet
                    for row, event in stored:
                        if wanted(event):
                            yield b"id: %d\ndata: %s\n\n" % (row, encode(event))
                    if stored:
                        quiet_since = time.monotonic()
                        if len(stored) == PAGE:
                            continue
                    elif time.monotonic() - quiet_since > KEEP_ALIVE_S:
                        quiet_since = time.monotonic()
                        yield b": keep-alive\n\n"
                    await asyncio.sleep(POLL_S)
            finally:
                slots.give_back(client)

        return StreamingResponse(
            messages(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
