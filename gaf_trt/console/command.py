"""The command class of every ``gaf-trt`` (and ``python -m gaf_trt.training``) command.

Typer 0.29 prints a type after every option in ``--help``, ``<bool>`` included, so on/off
flags read as if they took a value (``--permute <bool>``) although ``--permute true`` is an
error. :class:`GafCommand` shows flags bare: ``--permute``, ``--quiet``, ``--help``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from typer.core import TyperCommand


def _no_type(ctx: Any = None) -> None:  # noqa: ARG001 - Typer passes ctx=
    return None


def bare_flags(params: list[Any]) -> list[Any]:
    """Hide the ``<bool>`` of on/off flags (options that take no value) in the help."""
    for param in params:
        if getattr(param, "is_flag", False) and hasattr(param, "display_type_rich"):
            param.display_type_rich = _no_type
    return params


class GafCommand(TyperCommand):
    """A Typer command whose on/off flags show no value type in ``--help``."""

    def get_params(self, ctx: Any) -> list[Any]:
        return bare_flags(super().get_params(ctx))


def check_output_file(path: str | os.PathLike[str], what: str) -> Path:
    """An output file's path, checked before any work: not a folder, and its folder
    creatable and writable (:func:`~gaf_trt.io.files.check_output_dir`). Raises
    :class:`~gaf_trt.errors.ConfigError` naming ``what`` and the path."""
    from gaf_trt.errors import ConfigError
    from gaf_trt.io.files import check_output_dir

    p = Path(path)
    if str(path).strip() == "":
        raise ConfigError(f"{what} is empty; give a file path")
    if p.is_dir():
        raise ConfigError(f"{what} {p} is a directory; give a file path")
    check_output_dir(p.parent if str(p.parent) else ".", what=f"the folder of {what} {p}:")
    return p
