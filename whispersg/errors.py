"""WhisperSG's exceptions: each message says what went wrong, where, and what to do.

The CLIs print ``str(error)`` as one line (no traceback unless ``--debug``), so
every message must stand on its own.
"""

from __future__ import annotations


class WhisperSGError(Exception):
    """Base class of every error WhisperSG raises on purpose."""

    exit_code = 1


class AudioError(WhisperSGError):
    """An input recording cannot be read or decoded."""


class ModelError(WhisperSGError):
    """A model is missing, incomplete or cannot be loaded."""


class OptionError(WhisperSGError, ValueError):
    """An option value is invalid or incompatible with the model or machine."""

    exit_code = 2


class OutputError(WhisperSGError):
    """An output file cannot be written."""


class DataError(WhisperSGError):
    """A corpus, transcript or prepared dataset cannot be read (the message names file and line)."""


class DependencyError(WhisperSGError):
    """A feature needs an optional extra that is not installed."""


class NetworkError(WhisperSGError):
    """A download was asked for but the network cannot be reached."""


def missing_extra(feature: str, extra: str, module: str) -> DependencyError:
    """Build the error for a feature whose optional dependency is not installed."""
    return DependencyError(
        f"{feature} needs the '{module}' package, which is not installed; "
        f"install it with: pip install 'whispersg[{extra}]'"
    )
