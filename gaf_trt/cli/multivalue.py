"""Options that take several values after one flag (``--classes 510 984``).

Click options take one value per occurrence; :class:`MultiValueCommand` rewrites
``--classes 510 984`` into ``--classes 510 --classes 984`` before Click parses, so the
published sampler's command lines work exactly as written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from gaf_trt.console.command import GafCommand

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


class MultiValueCommand(GafCommand):
    """A command whose ``multi_value`` options accept several values per flag."""

    multi_value = frozenset({"--classes", "--weight", "--regions"})

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, expand_multi(args, self.multi_value))
