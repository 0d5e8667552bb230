"""The API's routes (FastAPI): cameras, their live pictures, events with their
snapshots, counts, the config, health and metrics, behind one token. Everything
is read: events from the SQLite store (read-only, through the query layer
``framechain events`` uses), the chain's state from the supervisor's status
file, pictures from the track stages' lossy previews. Nothing here can hold the
chain back.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from fastapi import FastAPI, Query, Request
from fastapi.responses import (
    JSONResponse,
    PlainTextResponse,
    Response,
)
from pydantic import Field, create_model

from pipeline.errors import FramechainError
from pipeline.observability import METRICS_CONTENT_TYPE, readiness
from stages.api.cameras import CameraBoard
from stages.api.console import (
    COOKIE,
    add_console_routes,
    is_console_path,
    session_value,
)
from stages.api.live import LivePictures
from stages.api.models import (
    Camera,
    Counts,
    EventKind,
    Problem,
    event_model,
    problem,
)
from stages.api.pictures import add_picture_routes
from stages.api.rules import add_rule_routes
from stages.api.stats import ApiStats
from stages.api.stream import add_stream_routes
from stages.sinks import eventstore

TrackId = Annotated[int, Field(ge=-1, le=2**62)]
BUCKETS = {"minute": 60, "hour": 3600, "day": 86400}
MAX_PAGE = 1000
WHEN = "ISO time (2026-11-23T08:00), Unix time, or back from now (15m, 2h, 7d)"
CURSOR = "The next of the page before: the page after it"
OPEN_PATHS = frozenset({"/healthz", "/api/session"})
"""Answered without the token: what a load balancer or an orchestrator probes,
and the console's sign-in (besides its files, ``console.is_console_path``)."""

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass
class ApiSettings:
    """What the routes read, built once by the service's plan."""

    store: Path
    board: CameraBoard
    process_kinds: Any
    event_kinds: tuple[str, ...]
    directional: tuple[str, ...]
    config: dict[str, Any]
    metrics: Callable[[], bytes]
    live: LivePictures
    snapshot_dirs: dict[str, Path]
    """Each camera's snapshot folder: the only place snapshots are served from."""
    clips: dict[str, Any] = field(default_factory=dict)
    """Each camera's clip settings (``stages.record.config.ClipConfig``)."""
    config_path: Path | None = None
    """The config file, which PUT .../rules edits; None: rules are read-only."""
    registry: Any = None
    token: str | None = None
    stats: ApiStats = field(default_factory=ApiStats)
    closing: bool = False
    """Set as the service stops: the answers that stream end by themselves
    (within a second), so none is cut off by the server."""


class _Guard:
    """Every request but ``OPEN_PATHS`` carries the token (``Authorization:
    Bearer``, or any user name with the token as HTTP basic password), compared
    in constant time; counts requests, 401s and 5xx answers."""

    def __init__(self, app: App, settings: ApiSettings) -> None:
        self.app = app
        self.settings = settings
        token = settings.token
        self._token = token.encode() if token is not None else None
        self._session = session_value(token) if token is not None else None

    def _session_cookie(self, header: bytes) -> bool:
        """The console's session cookie (``stages.api.console``), when sent."""
        assert self._session is not None
        for pair in header.split(b";"):
            name, _, value = pair.strip().partition(b"=")
            if name == COOKIE.encode() and hmac.compare_digest(value, self._session):
                return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        stats = self.settings.stats
        stats.requests += 1
        path = scope["path"]
        if (
            self._token is not None
            and path not in OPEN_PATHS
            and not is_console_path(path)
        ):
            headers = dict(scope["headers"])
            if not self._allowed(headers):
                stats.unauthorized += 1
                # the Basic challenge only to an address typed in a browser: a
                # console's fetch or picture answered with it would pop up the
                # browser's own password box over the console's sign-in
                typed = headers.get(b"sec-fetch-mode", b"navigate") == b"navigate"
                challenge = 'Bearer, Basic realm="framechain"' if typed else "Bearer"
                response = JSONResponse(
                    {"detail": "a token is needed: Authorization: Bearer <token>"},
                    status_code=401,
                    headers={"WWW-Authenticate": challenge},
                )
                await response(scope, receive, send)
                return

        async def counted(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 500:
                stats.server_errors += 1
            await send(message)

        await self.app(scope, receive, counted)

    def _allowed(self, headers: dict[bytes, bytes]) -> bool:
        assert self._token is not None and self._session is not None
        if self._session_cookie(headers.get(b"cookie", b"")):
            return True
        scheme, _, value = headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() == b"bearer":
            return hmac.compare_digest(value.strip(), self._token)
        if scheme.lower() == b"basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True)
            except (binascii.Error, ValueError):
                return False
            return hmac.compare_digest(decoded.partition(b":")[2], self._token)
        return False


def _json(body: Any) -> Response:
    """Encoded by msgspec: a page of events is most of what this service sends."""
    return Response(msgspec.json.encode(body), media_type="application/json")


def _cursor(event: dict[str, Any]) -> str:
    raw = json.dumps([event["capture_ts"], event["event_id"]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _uncursor(text: str) -> tuple[float, str]:
    """Raises ValueError: not a cursor this service gave."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        ts, event_id = json.loads(raw)
        if not isinstance(ts, int | float) or not isinstance(event_id, str):
            raise TypeError
        return float(ts), event_id
    except (binascii.Error, ValueError, TypeError, OverflowError, RecursionError):
        raise ValueError(f"not a cursor of this API: {text[:40]!r}") from None


def build_app(settings: ApiSettings) -> Any:
    """The ASGI application: routes, behind the token guard."""
    event = event_model()
    page = create_model(
        "EventPage",
        __doc__="Events newest first; next is the cursor of the page after, if any.",
        events=(list[event], ...),  # type: ignore[valid-type]
        next=(str | None, ...),
    )
    errors: dict[int | str, dict[str, Any]] = {
        404: {"model": Problem},
        422: {"model": Problem},
        503: {"model": Problem},
    }
    app = FastAPI(
        title="framechain",
        description="Cameras, events and counts of a running framechain.",
        version="1",
        docs_url=None,  # the docs pages load scripts from the internet
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    board = settings.board

    def known(what: str, values: list[str] | None, allowed: list[str]) -> list[str]:
        unknown = sorted(set(values or ()) - set(allowed))
        if unknown:
            raise _Invalid(
                f"unknown {what} {', '.join(map(repr, unknown))}; known: "
                f"{', '.join(allowed) or 'none'}"
            )
        return values or []

    def selection(
        camera: list[str] | None,
        rule: list[str] | None,
        kind: list[str] | None,
        since: str | None,
        until: str | None,
    ) -> dict[str, Any]:
        try:
            start = eventstore.parse_time(since) if since else None
            end = eventstore.parse_time(until) if until else None
        except FramechainError as e:
            raise _Invalid(str(e)) from None
        return {
            "cameras": known("camera", camera, board.names()),
            "rules": rule or (),
            "kinds": known("kind", kind, list(settings.event_kinds)),
            "since": start,
            "until": end,
        }

    @app.exception_handler(FramechainError)
    async def _store_failed(_request: Request, error: FramechainError) -> Response:
        return problem(503, str(error))

    @app.get("/healthz", responses={503: {"model": Problem}})
    def healthz() -> dict[str, str]:
        """200 while the chain's supervisor runs (its status file is fresh)."""
        if board.snapshot() is None:
            raise FramechainError("the chain's supervisor is not running")
        return {"status": "alive"}

    @app.get("/readyz", responses={503: {"model": dict[str, Any]}})
    def readyz() -> Response:
        """200 while every stage runs (see docs/operations.md), else 503."""
        snapshot = board.snapshot()
        if snapshot is None:
            return problem(503, "the chain's supervisor is not running")
        status, body = readiness(snapshot, settings.process_kinds)
        return JSONResponse(body, status_code=status)

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={503: {"description": "The chain's supervisor is not running."}},
    )
    def metrics() -> Response:
        """Prometheus text: every stage's statistics."""
        if board.snapshot() is None:
            return Response(b"", media_type=METRICS_CONTENT_TYPE, status_code=503)
        return Response(settings.metrics(), media_type=METRICS_CONTENT_TYPE)

    @app.get("/api/cameras", response_model=list[Camera])
    def cameras() -> Response:
        """Every camera: state, rates, drops, rules."""
        return _json(board.cameras())

    @app.get("/api/cameras/{name}", response_model=Camera, responses=errors)
    def camera(name: str) -> Response:
        """One camera."""
        found = [c for c in board.cameras() if c["name"] == name]
        if not found:
            return problem(
                404, f"no camera {name!r}; known: {', '.join(board.names())}"
            )
        return _json(found[0])

    add_picture_routes(app, settings, errors)
    # before /api/events/{event_id}, which would take "stream" for an id
    add_stream_routes(app, settings, errors, known)
    add_rule_routes(app, settings, errors)
    add_console_routes(app, settings, errors)

    @app.get("/api/events", response_model=page, responses=errors)
    def events(
        camera: Annotated[list[str] | None, Query()] = None,
        rule: Annotated[list[str] | None, Query()] = None,
        kind: Annotated[list[str] | None, Query()] = None,
        class_name: Annotated[list[str] | None, Query(alias="class")] = None,
        track: Annotated[list[TrackId] | None, Query()] = None,
        since: Annotated[
            str | None, Query(description="ISO time, Unix time, 15m")
        ] = None,
        until: Annotated[str | None, Query(description="same forms as since")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
        cursor: Annotated[
            str | None, Query(description="next of the page before")
        ] = None,
    ) -> Response:
        """Stored events, newest first, a page at a time."""
        try:
            before = _uncursor(cursor) if cursor else None
            chosen = selection(camera, rule, kind, since, until)
        except (_Invalid, ValueError) as e:
            return problem(422, str(e))
        rows = eventstore.query(
            settings.store,
            eventstore.Query(
                **chosen,
                classes=class_name or (),
                tracks=track or (),
                limit=limit + 1,
                newest_first=True,
                before=before,
            ),
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return _json({"events": rows, "next": _cursor(rows[-1]) if more else None})

    @app.get("/api/events/{event_id}", response_model=event, responses=errors)
    def one_event(event_id: str) -> Response:
        """One event by its id."""
        rows = eventstore.query(settings.store, eventstore.Query(ids=(event_id,)))
        if not rows:
            return problem(404, f"no event {event_id!r}")
        return _json(rows[0])

    @app.get("/api/counts", response_model=Counts, responses=errors)
    def counts(
        bucket: Literal["minute", "hour", "day"] = "hour",
        camera: Annotated[list[str] | None, Query()] = None,
        rule: Annotated[list[str] | None, Query()] = None,
        kind: Annotated[list[str] | None, Query()] = None,
        since: Annotated[str | None, Query(description=WHEN)] = None,
        until: Annotated[str | None, Query(description=WHEN)] = None,
    ) -> Response:
        """How many events per bucket, camera, rule, kind, class and direction."""
        try:
            chosen = selection(camera, rule, kind, since, until)
        except _Invalid as e:
            return problem(422, str(e))
        rows = eventstore.counts(
            settings.store,
            eventstore.Query(**chosen),
            BUCKETS[bucket],
            settings.directional,
        )
        return _json({"bucket": bucket, "bucket_s": BUCKETS[bucket], "counts": rows})

    @app.get("/api/event-kinds", response_model=list[EventKind])
    def event_kinds() -> Response:
        """Every kind of event this framechain stores: the kind filter's values."""
        specs = (
            {k.name: k for k in settings.registry.events.all()}
            if settings.registry
            else {}
        )
        return _json(
            [
                {
                    "name": name,
                    "description": specs[name].description if name in specs else "",
                    "directions": list(specs[name].directions) if name in specs else [],
                }
                for name in settings.event_kinds
            ]
        )

    @app.get("/api/config", response_model=dict[str, Any])
    def config() -> Response:
        """The config in force, every secret replaced by ***."""
        return _json(settings.config)

    return _Guard(app, settings)


class _Invalid(ValueError):
    """A filter names what does not exist: 422 with the known values."""
