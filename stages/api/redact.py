"""The config as the API shows it: every secret replaced by ``***``.

Secrets hide in three places: fields typed as secrets (pydantic already prints
``**********``), keys that name one (password, token, secret, ...), and inside
strings: the password of a URL's user (``rtsp://viewer:pw@host``) and query
parameters that carry credentials (``?token=...``)."""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
_SECRET_KEY = re.compile(r"pass(word)?|token|secret|credential|api_?key|auth", re.I)
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/:@\s]*:)[^@/\s]*@", re.I)
_QUERY_SECRET = re.compile(
    r"(?P<head>[?&](?:pass(?:word)?|token|secret|key|api_?key|auth|sig(?:nature)?)=)"
    r"[^&#\s]*",
    re.I,
)


def redact(value: Any, key: str = "") -> Any:
    """``value`` (a JSON-like tree) with its secrets masked."""
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    if isinstance(value, str):
        if key and _SECRET_KEY.search(key) and value:
            return MASK
        value = _URL_PASSWORD.sub(lambda m: m["head"] + MASK + "@", value)
        return _QUERY_SECRET.sub(lambda m: m["head"] + MASK, value)
    return value
