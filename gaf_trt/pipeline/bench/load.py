"""How busy the machine was while ``gaf-trt bench`` ran: the 1-minute load average
(``/proc/loadavg``) before and after the run, and the label its report prints.

A run is labelled ``quiet`` only when the machine was idle before it and nothing but the
bench itself added load during it: load before below :data:`QUIET_LOAD`, and load after below
the bench's own compute threads plus :data:`QUIET_LOAD` (the bench's threads keep the
1-minute average near their count while it runs: on a 2-core CPU a 2-thread bench ends near
2.0 on an idle machine). Anything else -- or an unreadable load -- is never ``quiet``:
``busy (load 3.1→4.2)`` or ``load unknown``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: Load (runnable processes, 1-minute average) that other work may add and still be quiet.
QUIET_LOAD = 0.5
LOADAVG = Path("/proc/loadavg")

LoadReader = Callable[[], "float | None"]


def read_load(path: Path = LOADAVG) -> float | None:
    """The 1-minute load average, or None where ``/proc/loadavg`` cannot be read."""
    try:
        return float(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class LoadSpan:
    """The load average before and after a run (None: unreadable) and the run's own
    compute threads."""

    before: float | None
    after: float | None
    own: int = 1

    @property
    def quiet(self) -> bool:
        """Whether the run had the machine to itself (see the module docstring)."""
        if self.before is None or self.after is None:
            return False
        return self.before < QUIET_LOAD and self.after < self.own + QUIET_LOAD

    @property
    def label(self) -> str:
        """``quiet (load 0.1→1.9)``, ``busy (load 3.1→4.2)`` or ``load unknown``."""
        if self.before is None or self.after is None:
            return "load unknown"
        span = f"load {self.before:.2f}→{self.after:.2f}"
        return f"quiet ({span})" if self.quiet else f"busy ({span})"
