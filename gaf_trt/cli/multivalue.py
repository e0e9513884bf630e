"""Options that take several values after one flag (``--classes 510 984``).

Click options take one value per occurrence; :class:`MultiValueCommand` rewrites
``--classes 510 984`` into ``--classes 510 --classes 984`` before Click parses, so the
published sampler's command lines work exactly as written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import sys
from typing import Any

from typer.core import TyperCommand, TyperGroup

try:  # recent Typer vendors Click; older releases use the click package
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - depends on the installed Typer
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def expand_multi(args: Iterable[str], flags: frozenset[str]) -> list[str]:
    """Repeat a multi-value flag before each of its values; a value ends at the next option
    (a token starting with ``-`` that is not a number) or at ``--``."""
    out: list[str] = []
    current: str | None = None
    for tok in args:
        if tok == "--":
            current = None
            out.append(tok)
            continue
        name = tok.split("=", 1)[0]
        if name in flags:
            current = name
            if "=" in tok:
                out.append(tok)
            continue
        if current is not None and not (tok.startswith("-") and not _NUMBER.match(tok)):
            out += [current, tok]
            continue
        current = None
        out.append(tok)
    return out


class MultiValueCommand(TyperCommand):
    """A command whose ``multi_value`` options accept several values per flag."""

    multi_value = frozenset({"--classes", "--weight", "--regions"})

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, expand_multi(args, self.multi_value))


class OneLineErrorGroup(TyperGroup):
    """The command group: usage errors (a non-integer ``--steps``, an unknown option) become
    one line on stderr and exit code 2 instead of a usage box."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_exceptions.ClickException as err:
            if type(err).__name__ == "NoArgsIsHelpError":
                err.show()
            else:
                sys.stderr.write(f"error: {err.format_message()}\n")
            sys.exit(err.exit_code)
        except click_exceptions.Abort:
            sys.stderr.write("aborted\n")
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)
