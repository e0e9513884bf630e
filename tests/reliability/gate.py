"""A gated child process: a real ``gaf-trt`` / training command that stops at a named point
and waits there until the test lets it go, so signal, kill and concurrency tests never
depend on how fast the machine is.

Run as ``python -m tests.reliability.gate POINT GATE_DIR MODULE ARGS...``. The child patches
one library function (before the command's modules are imported), runs ``MODULE`` as
``python -m MODULE ARGS...`` would, and when it reaches ``POINT`` for the time given in
:data:`POINTS` it creates ``GATE_DIR/reached`` and then waits (an interruptible sleep) until
``GATE_DIR/go`` exists. The test waits for ``reached`` (:func:`wait_reached`), does what it
tests (send a signal, kill, start a rival run), and creates ``go`` (:func:`release`) if the
child should continue. The order of events is therefore certain: the child is *at* the point
while the test acts.

Points:

- ``sampling``: inside the solver loop (the network's 2nd evaluation), the output lock held;
- ``staging``: the 3rd file written into the run's staging folder;
- ``commit``: in the middle of :meth:`OutputDir.commit` (after 2 files were moved into
  ``--out``, the old record already removed);
- ``checkpoint``: a training checkpoint ``last.pt`` fully written to its temp file but not
  yet renamed onto ``last.pt``.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import time
from pathlib import Path

#: The point -> how many times it is passed before the gate closes.
POINTS = {"sampling": 2, "staging": 3, "commit": 2, "checkpoint": 1}
REACHED = "reached"
GO = "go"


class _Gate:
    def __init__(self, folder: Path, after: int) -> None:
        self.folder = folder
        self.after = after
        self.count = 0

    def passed(self) -> None:
        """Count one pass; on the ``after``-th, announce and wait for the test."""
        self.count += 1
        if self.count != self.after:
            return
        (self.folder / REACHED).write_text(str(os.getpid()))
        while not (self.folder / GO).exists():
            time.sleep(0.05)  # interruptible: SIGINT raises KeyboardInterrupt here


def _install(point: str, gate: _Gate) -> None:
    """Patch the library so that ``gate.passed()`` runs at ``point``."""
    if point == "sampling":
        from gaf_trt.model.gaf import GAF

        forward = GAF.forward

        def gated_forward(self, *args, **kwargs):  # noqa: ANN001, ANN202
            gate.passed()
            return forward(self, *args, **kwargs)

        GAF.forward = gated_forward  # type: ignore[method-assign]
    elif point in ("staging", "commit"):
        real_replace = os.replace

        def gated_replace(src, dst, *args, **kwargs):  # noqa: ANN001, ANN202
            in_staging = [".staging" in Path(p).parent.name or ".staging" in str(p)
                          for p in (src, dst)]
            result = real_replace(src, dst, *args, **kwargs)
            if point == "staging" and in_staging[1]:
                gate.passed()
            elif point == "commit" and in_staging[0] and not in_staging[1]:
                gate.passed()
            return result

        os.replace = gated_replace  # type: ignore[assignment]
    elif point == "checkpoint":
        import gaf_trt.io.files as files

        real_atomic = files.atomic_write

        def gated_atomic(path, write):  # noqa: ANN001, ANN202
            if Path(path).name != "last.pt":
                return real_atomic(path, write)

            def write_then_wait(tmp: Path) -> None:
                write(tmp)
                gate.passed()

            return real_atomic(path, write_then_wait)

        files.atomic_write = gated_atomic  # type: ignore[assignment]
    else:
        raise SystemExit(f"unknown gate point {point!r}; valid: {', '.join(POINTS)}")


def main(argv: list[str]) -> None:
    point, folder, module, *args = argv
    # A user's terminal delivers Ctrl-C; a test runner started in the background without job
    # control hands its children SIGINT *ignored*, which Python would keep. Act as the user's
    # shell does, so SIGINT reaches the command whoever started the test suite.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    gate = _Gate(Path(folder), POINTS.get(point, 1))
    _install(point, gate)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


# --------------------------------------------------------------------------- test side


def gate_cmd(point: str, folder: Path, module: str, *args: str | os.PathLike[str]) -> list[str]:
    """The command line of a gated child."""
    return [sys.executable, "-m", "tests.reliability.gate", point, str(folder), module,
            *map(str, args)]


def wait_reached(folder: Path, proc, timeout: float) -> bool:  # noqa: ANN001
    """Wait until the child announces the point (True) or ends first (False). ``timeout``
    only guards against a hang: reaching the point does not depend on it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (folder / REACHED).exists():
            return True
        if proc.poll() is not None:
            return (folder / REACHED).exists()
        time.sleep(0.02)
    return False


def release(folder: Path) -> None:
    """Let the gated child continue."""
    (folder / GO).write_text("go")


if __name__ == "__main__":
    main(sys.argv[1:])
