"""What every stage process does before anything else: a recognisable process
title, tracebacks on fatal signals, logging set up once, and a tie to its
supervisor's life."""

from __future__ import annotations

import faulthandler
import os
import signal

from pipeline.log import setup_logging


def bootstrap(name: str, log_level: str = "INFO", log_format: str = "text") -> None:
    """What every stage process does first: a recognisable process title, tracebacks
    on fatal signals, logging set up once."""
    try:
        from setproctitle import setproctitle

        setproctitle(f"framechain {name}")
    except ImportError:  # optional nicety
        pass
    faulthandler.enable()
    setup_logging(name, log_level, log_format)


def die_with(supervisor_pid: int) -> None:
    """Ask Linux to SIGTERM this stage when its supervisor dies, even by SIGKILL, so
    no orphaned stage keeps a camera or a shared-memory ring, or blocks forever on a
    dead neighbour (no-op elsewhere).

    The supervisor's pid comes from its command line, not from ``getppid()`` here:
    a stage still importing when the supervisor dies has already been handed to
    init (or a container's subreaper), and would take that for its parent."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != supervisor_pid:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)
