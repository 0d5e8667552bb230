"""Building blocks for the config models that live next to each stage.

Every model is strict (unknown keys are errors) and frozen. ``${ENV}`` interpolation is
a validator type used only on fields that may hold secrets or deployment-specific
locations; it reads the environment handed in through the validation context at load
time, never at import time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
)

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class StrictModel(BaseModel):
    """Base of every config model: one-to-one with the YAML, no unknown keys, no
    infinite or NaN numbers (``.inf`` seconds would disable a timeout)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, str_strip_whitespace=True, allow_inf_nan=False
    )


def _context(info: ValidationInfo) -> dict[str, Any]:
    return info.context if isinstance(info.context, dict) else {}


def _expand_env(value: Any, info: ValidationInfo) -> Any:
    """Replace ``${NAME}`` / ``${NAME:-default}`` with values from the environment
    (and from files in ``$CREDENTIALS_DIRECTORY``, systemd's LoadCredential)."""
    if not isinstance(value, str):
        return value
    environ: dict[str, str] = _context(info).get("environ", {})
    credentials = environ.get("CREDENTIALS_DIRECTORY")

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if credentials and (Path(credentials) / name).is_file():
            return (Path(credentials) / name).read_text().strip()
        if default is not None:
            return default
        raise ValueError(
            f"environment variable {name} is not set; export it or put it in "
            "$CREDENTIALS_DIRECTORY"
        )

    return _ENV_REFERENCE.sub(substitute, value)


def _resolve_path(value: str, info: ValidationInfo) -> str:
    """Relative paths are relative to the config file's folder, so a config works
    whatever the current directory is."""
    path = Path(value).expanduser()
    base = _context(info).get("base_dir")
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return os.path.normpath(path)


EnvStr = Annotated[str, BeforeValidator(_expand_env)]
"""A string that may contain ``${ENV}`` references."""

ConfigPath = Annotated[str, AfterValidator(_resolve_path)]
"""A file path, relative to the config file's folder unless absolute."""

_URL_PASSWORD = re.compile(r"://[^/@\s:]*:(?P<password>[^/\s]*)@")


def _no_literal_password(value: Any) -> Any:
    """Credentials come only from ${ENV} or credential files, never the YAML text,
    which ends up in backups, tickets and version control."""
    if isinstance(value, str):
        match = _URL_PASSWORD.search(value)
        if match and not match.group("password").startswith("${"):
            raise ValueError(
                "the URL holds a password in plain text; write it as ${NAME} and set "
                "NAME in the environment or in $CREDENTIALS_DIRECTORY"
            )
    return value


# Before-validators run last-listed first: the literal check sees the raw YAML text.
EnvSecret = Annotated[
    SecretStr, BeforeValidator(_expand_env), BeforeValidator(_no_literal_password)
]
"""A secret (a camera URL with credentials): ``${ENV}`` allowed, never printed."""


def _reference_only(value: Any) -> Any:
    """A password field must name where the secret lives, not hold it."""
    if isinstance(value, str) and not _ENV_REFERENCE.search(value):
        raise ValueError(
            "write the password as ${NAME} and set NAME in the environment or in "
            "$CREDENTIALS_DIRECTORY; plain-text passwords are refused"
        )
    return value


SecretRef = Annotated[
    SecretStr, BeforeValidator(_expand_env), BeforeValidator(_reference_only)
]
"""A password: only ``${ENV}`` (or a credential file) is accepted, never printed."""

EnvPath = Annotated[str, BeforeValidator(_expand_env), AfterValidator(_resolve_path)]
"""A file path that may contain ``${ENV}`` references (sources, secrets)."""


def environ_snapshot() -> dict[str, str]:
    """The environment as handed to config validation (read once, at load time)."""
    return dict(os.environ)


Share = Annotated[float, Field(gt=0, lt=1)]
"""A fraction strictly between 0 and 1 (a confidence)."""

FrameSide = Annotated[int, Field(ge=16, le=16384)]
"""A frame's width or height in pixels."""


def url_problem(url: str, schemes: tuple[str, ...]) -> str | None:
    """Why ``url`` is not a ``scheme://host[:port]/...`` URL of one of ``schemes``."""
    starts = " or ".join(f"{s}://" for s in schemes)
    parts = urlsplit(url)
    if parts.scheme.lower() not in schemes or not url.lower().startswith(
        f"{parts.scheme.lower()}://"
    ):
        return f"the URL must start with {starts}"
    host = parts.netloc.rpartition("@")[2]
    if not parts.hostname or any(c.isspace() for c in host):
        return f"the URL has no valid host; write it as {schemes[0]}://HOST[:PORT]/PATH"
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        return "the URL's port must be a number from 1 to 65535"
    return None


def url_of(*schemes: str) -> AfterValidator:
    """A check for an ``EnvSecret`` URL, after ``${ENV}`` expansion: its scheme is
    one of ``schemes`` and it has a host and a valid port, so that a camera that can
    never be reached is refused at load (``Annotated[EnvSecret, url_of("rtsp")]``)."""

    def check(value: SecretStr) -> SecretStr:
        problem = url_problem(value.get_secret_value(), schemes)
        if problem is not None:
            raise ValueError(problem)
        return value

    return AfterValidator(check)
