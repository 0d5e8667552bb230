"""``framechain report``: a PNG of counts and occupancy over time from the store.

What goes where comes from the registered event kinds (``EventKindSpec.report``):
top panel, the ``count`` kinds (line crossings) per time bucket, one series per
camera, rule and direction; bottom panel, each ``level`` kind (zone occupancy) as a
step line of its ``value``, with the periods between a ``span_start`` and a
``span_end`` kind (crowds) shaded. A plugin's kind is drawn the same way.

matplotlib is an optional extra (``framechain[report]``); it is
imported here only, with the Agg backend, so no display is needed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.errors import FramechainError
from pipeline.eventkinds import EventKindSpec, ReportRole

NICE_BUCKETS_S = (
    1,
    2,
    5,
    10,
    15,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
    21600,
    86400,
)


def pick_bucket(span_s: float, buckets: int = 40) -> float:
    """A round bucket length giving about ``buckets`` bars over ``span_s``."""
    wanted = span_s / buckets
    return next((b for b in NICE_BUCKETS_S if b >= wanted), NICE_BUCKETS_S[-1])


def draw_report(
    rows: list[dict[str, Any]],
    out: Path,
    title: str,
    kinds: Sequence[EventKindSpec],
    bucket_s: float | None = None,
) -> dict[str, Any]:
    """Write the chart; returns what it drew (series names, bucket, event count).

    Raises:
        FramechainError: matplotlib is missing, no events to draw, or ``out`` cannot
            be written.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.dates as mdates
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise FramechainError(
            "framechain report needs matplotlib: pip install 'framechain[report]'"
        ) from None
    roles: dict[str, ReportRole] = {
        spec.name: spec.report for spec in kinds if spec.report is not None
    }
    crossings = [r for r in rows if roles.get(r["kind"]) == "count"]
    occupancy = [r for r in rows if roles.get(r["kind"]) == "level"]
    crowds = [r for r in rows if roles.get(r["kind"], "").startswith("span_")]
    if not crossings and not occupancy:
        drawn = ", ".join(k for k, role in roles.items() if role in ("count", "level"))
        raise FramechainError(
            f"nothing to draw: no {drawn} events in the selection; widen "
            "--since/--until or check --camera"
        )
    first = min(r["capture_ts"] for r in rows)
    last = max(r["capture_ts"] for r in rows)
    bucket = bucket_s or pick_bucket(max(last - first, 1.0))

    counts: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for r in crossings:
        series = f"{r['stream_id']}/{r['rule']} {r['direction']}".rstrip()
        counts[series][math.floor(r["capture_ts"] / bucket)] += 1
    zones: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in occupancy:
        zones[f"{r['stream_id']}/{r['rule']}"].append((r["capture_ts"], r["value"]))

    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 7), sharex=True, constrained_layout=True
    )
    figure.suptitle(title)
    width = bucket / 86400 / (len(counts) + 1)
    for i, (series, by_bucket) in enumerate(sorted(counts.items())):
        xs = [_date(k * bucket) + i * width for k in sorted(by_bucket)]
        top.bar(
            xs,
            [by_bucket[k] for k in sorted(by_bucket)],
            width=width,
            label=series,
            align="edge",
        )
    top.set_ylabel(f"crossings per {_duration(bucket)}")
    top.yaxis.set_major_locator(MaxNLocator(integer=True))
    if counts:
        top.legend(loc="upper left", fontsize="small")
    top.grid(axis="y", alpha=0.3)
    for series, points in sorted(zones.items()):
        points.sort()
        bottom.step(
            [_date(t) for t, _ in points] + [_date(last)],
            [v for _, v in points] + [points[-1][1]],
            where="post",
            label=series,
        )
    started: dict[str, float] = {}
    for r in sorted(crowds, key=lambda r: r["capture_ts"]):
        key = f"{r['stream_id']}/{r['rule']}"
        if roles[r["kind"]] == "span_start":
            started[key] = r["capture_ts"]
        elif key in started:
            bottom.axvspan(
                _date(started.pop(key)), _date(r["capture_ts"]), color="red", alpha=0.12
            )
    for begin in started.values():
        bottom.axvspan(_date(begin), _date(last), color="red", alpha=0.12)
    bottom.set_ylabel("objects in zone")
    if zones:
        bottom.legend(loc="upper left", fontsize="small")
    bottom.grid(alpha=0.3)
    bottom.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(out, dpi=100)
    except OSError as e:
        raise FramechainError(f"cannot write {out}: {e}") from e
    finally:
        plt.close(figure)
    return {
        "bucket_s": bucket,
        "lines": sorted(counts),
        "zones": sorted(zones),
        "events": len(rows),
    }


def _date(ts: float) -> float:
    import matplotlib.dates as mdates

    return float(mdates.date2num(datetime.fromtimestamp(ts)))


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
