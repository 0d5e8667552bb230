"""Logging set up once per process, with credentials redacted from every record."""

from __future__ import annotations

import json
import logging
import re
import sys

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]*@")
_QUERY_SECRET = re.compile(
    r"(?P<key>(?:user(?:name)?|pass(?:word)?|passwd|pwd|token|secret|key))=[^&\s]*",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """Mask ``scheme://user:pass@`` and ``password=...`` style secrets in any text.

    >>> redact("rtsp://admin:p@ss:w0rd@10.0.0.2/live?user=x&password=y")
    'rtsp://***@10.0.0.2/live?user=***&password=***'
    """
    # Passwords may themselves contain '@': redact up to the last '@' before the host.
    text = re.sub(
        r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^\s/]*@(?=[^\s@/]*(?:[/\s]|$))",
        r"\g<scheme>***@",
        text,
    )
    text = _URL_CREDENTIALS.sub(r"\g<scheme>***@", text)
    return _QUERY_SECRET.sub(r"\g<key>=***", text)


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _StageFilter(logging.Filter):
    """Stamps every record with the stage name so one stream of logs from many
    processes stays readable."""

    def __init__(self, stage: str) -> None:
        super().__init__()
        self.stage = stage

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "stage"):
            record.stage = self.stage
        return True


class _JsonFormatter(logging.Formatter):
    """One JSON object per line for log shippers; redacted like the text form."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "stage": getattr(record, "stage", ""),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(stage: str, level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger for this process: one stderr handler, redacted."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            _RedactingFormatter(
                "%(asctime)s %(levelname)-7s [%(stage)s] %(name)s: %(message)s",
                datefmt="%H:%M:%S",
            )
        )
    handler.addFilter(_StageFilter(stage))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
