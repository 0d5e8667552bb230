"""The geometry a rule is configured with: points and polygons in source pixels,
validated as a whole so that a bad polygon is one message on its own path.

A polygon must be simple (no two edges cross), have an area and at most
``MAX_VERTICES`` vertices: a bowtie counts objects by the even-odd rule in ways
nobody meant, and the checks here are quadratic in the vertex count.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, BeforeValidator

MAX_VERTICES = 1000
LIMIT = 100_000  # source pixels either way: a coordinate beyond it is a mistake


def _coordinate(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number, got {value!r:.40}")
    if not -LIMIT <= value <= LIMIT:
        raise ValueError(f"{what} must be less than {LIMIT} pixels either way")
    return float(value)


def _point(value: Any, what: str = "a point") -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError(f"{what} must be [x, y], got {value!r:.40}")
    x, y = (_coordinate(v, f"{what}'s coordinate") for v in value)
    return x, y


def _vertices(value: Any) -> list[tuple[float, float]]:
    if not isinstance(value, list | tuple):
        raise ValueError("a polygon is a list of [x, y] vertices")
    if len(value) < 3:
        raise ValueError(f"a polygon needs at least 3 vertices, got {len(value)}")
    if len(value) > MAX_VERTICES:
        raise ValueError(f"a polygon has at most {MAX_VERTICES} vertices")
    bad = next(
        (
            i
            for i, v in enumerate(value)
            if not isinstance(v, list | tuple) or len(v) != 2
        ),
        None,
    )
    if bad is not None:
        raise ValueError(f"every vertex is [x, y]; vertex {bad} is {value[bad]!r:.40}")
    return [_point(v, f"vertex {i}") for i, v in enumerate(value)]


def polygon_area(points: Any) -> float:
    points = np.asarray(points, np.float64)
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def _cross(
    o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]
) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _on_segment(
    p: tuple[float, float], a: tuple[float, float], b: tuple[float, float]
) -> bool:
    return min(a[0], b[0]) <= p[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= p[
        1
    ] <= max(a[1], b[1])


def segments_meet(
    a: tuple[float, float],
    b: tuple[float, float],
    c: tuple[float, float],
    d: tuple[float, float],
) -> bool:
    """Whether segments ab and cd share a point (crossing or touching)."""
    d1, d2 = _cross(c, d, a), _cross(c, d, b)
    d3, d4 = _cross(a, b, c), _cross(a, b, d)
    if ((d1 > 0) != (d2 > 0)) and d1 != 0 and d2 != 0:
        if ((d3 > 0) != (d4 > 0)) and d3 != 0 and d4 != 0:
            return True
    return (
        (d1 == 0 and _on_segment(a, c, d))
        or (d2 == 0 and _on_segment(b, c, d))
        or (d3 == 0 and _on_segment(c, a, b))
        or (d4 == 0 and _on_segment(d, a, b))
    )


def _simple(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    n = len(points)
    for i in range(n):
        a, b = points[i], points[(i + 1) % n]
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue  # the closing edge meets the first at vertex 0
            c, d = points[j], points[(j + 1) % n]
            if segments_meet(a, b, c, d):
                raise ValueError(
                    f"edges {i}-{(i + 1) % n} and {j}-{(j + 1) % n} cross; a polygon "
                    "must not intersect itself (list the vertices in order around it)"
                )
    if polygon_area(points) < 1:
        raise ValueError(
            "the polygon has no area; give at least 3 non-collinear points"
        )
    return points


Point = Annotated[tuple[float, float], BeforeValidator(_point)]
"""[x, y] in source pixels, each within ±100 000."""

Polygon = Annotated[
    list[tuple[float, float]], BeforeValidator(_vertices), AfterValidator(_simple)
]
"""A simple polygon [[x, y], ...] in source pixels."""
