"""The API's response types, for ``/openapi.json``. The event's model is derived
from the one ``Event`` struct (its fields, types, constraints and descriptions),
never written a second time."""

from __future__ import annotations

from functools import cache
from typing import Any, Literal

import msgspec
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, create_model

from pipeline.messages import Event

_TYPES: dict[type, Any] = {
    msgspec.inspect.StrType: str,
    msgspec.inspect.IntType: int,
    msgspec.inspect.FloatType: float,
    msgspec.inspect.BoolType: bool,
    msgspec.inspect.DictType: dict[str, Any],
}
_LIMITS = ("ge", "le", "gt", "lt", "pattern")


def _field(field: msgspec.inspect.Field) -> tuple[Any, Any]:
    kind, extra = field.type, {}
    if isinstance(kind, msgspec.inspect.Metadata):
        extra = dict(kind.extra_json_schema or {})
        kind = kind.type
    limits = {
        k: getattr(kind, k) for k in _LIMITS if getattr(kind, k, None) is not None
    }
    return _TYPES[type(kind)], Field(description=extra.get("description"), **limits)


@cache
def event_model() -> type[BaseModel]:
    """``Event`` as a pydantic model: every field required in responses (a
    stored event has them all)."""
    info = msgspec.inspect.type_info(Event)
    assert isinstance(info, msgspec.inspect.StructType)
    fields = {f.name: _field(f) for f in info.fields}
    model: type[BaseModel] = create_model(  # type: ignore[call-overload]
        "Event",
        __config__=ConfigDict(extra="forbid"),
        __doc__=Event.__doc__,
        **fields,
    )
    return model


class Rule(BaseModel):
    name: str
    kind: str


class Camera(BaseModel):
    """A camera now: its source's state, its chain's, and its rates."""

    name: str
    state: str = Field(description="online, offline, starting, ended, unknown.")
    reason: str = Field(description="Why it is offline or its chain stalls; ''.")
    chain: str = Field(description="ok, or the first stage of its chain that is not.")
    frames: int = Field(description="Frames tracked.")
    fps_in: float = Field(description="Frames per second decoded and sent on.")
    fps_out: float = Field(description="Frames per second tracked.")
    width: int = Field(
        description="The camera's frame width: rules are in its pixels; 0 until "
        "a frame is tracked."
    )
    height: int = Field(description="The camera's frame height.")
    frame_age_p50_s: float
    frame_age_p99_s: float
    dropped: dict[str, int] = Field(description="Frames dropped, by where and why.")
    detector_share: float = Field(
        description="This camera's share of the frames the detector ran on."
    )
    rules: list[Rule]


class EventKind(BaseModel):
    name: str
    description: str
    directions: list[str] = Field(description="The values of direction it uses.")


class CountRow(BaseModel):
    start: float = Field(description="Bucket start, Unix time.")
    camera: str
    rule: str
    kind: str
    class_name: str
    direction: str = Field(description="in / out for directional kinds, else ''.")
    count: int


class Counts(BaseModel):
    bucket: Literal["minute", "hour", "day"]
    bucket_s: int
    counts: list[CountRow]


def problem(status: int, detail: str) -> JSONResponse:
    """An error answer: ``Problem``'s shape."""
    return JSONResponse({"detail": detail}, status_code=status)


class Problem(BaseModel):
    """Why a request was not answered."""

    detail: Any
