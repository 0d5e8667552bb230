"""framechain's stage kinds, one subpackage each (capture, decode, detect, track,
sinks, annotate, api, record), each holding its config next to its implementation and a
``kind`` module that registers it."""

from __future__ import annotations

from pipeline.registry import Registry


def register(registry: Registry) -> None:
    """Register every built-in stage kind and rule kind."""
    from stages.annotate import kind as annotate
    from stages.api import kind as api
    from stages.capture import kind as capture
    from stages.decode import kind as decode
    from stages.detect import kind as detect
    from stages.record import kind as record
    from stages.sinks import kind as sinks
    from stages.track import kind as track

    for module in (capture, decode, detect, track, annotate, sinks, api, record):
        module.register(registry)
