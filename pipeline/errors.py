"""Typed errors. Each also inherits the matching builtin, as PyAV's do, so callers can
catch either. Messages name the cause and the fix; only the CLI and the stage runtime
turn them into one-line logs and exit codes."""

from __future__ import annotations


class FramechainError(Exception):
    """Root of every error framechain raises on purpose."""


class ConfigError(FramechainError, ValueError):
    """The configuration is invalid. ``lines`` holds one ``path (line N): message``
    entry per problem so the CLI can print them all."""

    def __init__(self, message: str, lines: list[str] | None = None) -> None:
        super().__init__(message)
        self.lines = lines or [message]


class ModelNotFoundError(FramechainError, FileNotFoundError):
    """A model name did not resolve to a file in any model directory."""


class ModelFormatError(FramechainError, ValueError):
    """A model file exists but is not a model this backend can run."""


class BackendUnavailableError(FramechainError, ImportError):
    """The runtime for a configured backend is not installed."""


class SourceError(FramechainError, OSError):
    """A video source could not be opened or read."""


class PermanentError(FramechainError):
    """Starting the stage again cannot help (a file that cannot be read): its
    process exits with ``EXIT_PERMANENT`` and the supervisor ends the run at once
    rather than restarting it."""


class UnreadableSourceError(SourceError, PermanentError):
    """A file source that cannot be opened, or that holds no readable frame."""


class SlotOverwrittenError(FramechainError, LookupError):
    """A shared-memory slot was reused before its reader finished with it."""


class MessageError(FramechainError, ValueError):
    """Bytes on a link did not decode to a valid message."""
