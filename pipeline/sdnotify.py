"""systemd's notification protocol (sd_notify(3)) without libsystemd: one datagram
per message to ``$NOTIFY_SOCKET``. Without that variable every call does nothing, so
the same code runs under systemd, Docker or a terminal."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: Mapping[str, str]) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):  # abstract namespace
            address = "\0" + address[1:]
        self.address = address or None
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        watched = usec.isdigit() and (not pid or pid == str(os.getpid()))
        # Ping at a quarter of the deadline (systemd asks for at most half), so
        # a loaded box that delays one loop turn by a second still never trips it.
        self.watchdog_interval_s = int(usec) / 4e6 if watched else None

    def notify(self, message: str) -> None:
        if self.address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message.encode(), self.address)
        except OSError as e:
            log.warning("cannot notify systemd at %s: %s", self.address, e)
