"""User-facing error types.

Every error raised for bad *input* (a wrong class id, a corrupt checkpoint, an unknown
solver) derives from :class:`GAFError`. The CLI turns these into one line on stderr and exit
code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class GAFError(Exception):
    """Base class of every error caused by user input or user-supplied files."""


class CheckpointError(GAFError):
    """A checkpoint is missing, unreadable, corrupt or not a GAF checkpoint."""


class ConfigError(GAFError):
    """An option or argument has a value that is not allowed."""


class NonFiniteError(GAFError):
    """A result (a solver state, model weights) holds NaN or infinite values."""


def unknown_key(kind: str, key: object, valid: Iterable[str]) -> ConfigError:
    """Build the standard 'unknown X' error that lists the valid keys."""
    return ConfigError(f"unknown {kind} {key!r}; valid: {', '.join(sorted(valid))}")
