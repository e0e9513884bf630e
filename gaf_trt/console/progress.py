"""Progress on stderr (rich) for every long step of the command lines.

Two kinds:

- :func:`progress_factory`: one bar per solver loop (``sample``, ``transport``, ``translate``,
  ``evaluate``), advanced by the solvers' step callbacks;
- :func:`step_progress`: one status line naming the current step of a job made of a few
  long steps (``export``: export / parity check per graph; ``bench``: one line per row), with
  a step counter and the elapsed time; it disappears when the job ends.

Both are shown through :func:`shown`: when the command fails, the bars are cleared before the
error handler prints its one ``error:`` line, so stderr holds that line alone; when it
succeeds, a terminal keeps the finished bars. ``--quiet`` shows none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def progress_factory():
    """A rich progress bar (on stderr) over solver steps, one task per generation: returns
    ``(progress, factory)``; ``factory(label, total)`` adds a task and returns its
    ``(k, n, x)`` step callback."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    progress = Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=_console())
    tasks: dict[str, Any] = {}

    def factory(label: str, total: int):
        task = tasks.get(label)
        if task is None:  # one bar per label, even when a job asks for it again per chunk
            task = tasks[label] = progress.add_task(label, total=total)

        def step(k: int, n: int, _x: Any) -> None:
            progress.update(task, completed=k + 1, total=n)

        return step

    return progress, factory


def step_progress(total: int | None = None) -> tuple[Any, Callable[[str], None]]:
    """A one-line progress (on stderr) for a job of a few long steps: returns ``(progress,
    say)``; each ``say(message)`` starts the next step and shows its message."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = [SpinnerColumn(), TextColumn("{task.description}")]
    if total:
        columns += [BarColumn(bar_width=20), MofNCompleteColumn()]
    # transient: a status line, gone when the job ends (its result is on stdout)
    progress = Progress(*columns, TimeElapsedColumn(), console=_console(), transient=True)
    task = progress.add_task("starting", total=total)
    started = [False]

    def say(message: str) -> None:
        if started[0]:
            progress.advance(task)
        started[0] = True
        progress.update(task, description=str(message))

    return progress, say


@contextmanager
def shown(progress: Any) -> Iterator[Any]:
    """Show ``progress`` while the block runs. On an exception the display is cleared (made
    transient) so that the error line is the only thing the command leaves on stderr."""
    progress.start()
    try:
        yield progress
    except BaseException:
        # Live alone: Progress.stop() would also print an empty line on a non-terminal
        progress.live.transient = True
        progress.live.stop()
        raise
    for task in progress.tasks:  # the last step of a step_progress is done too
        if task.total is not None:
            progress.update(task.id, completed=task.total)
    if progress.live.transient:  # nothing left to end with a newline on a non-terminal
        progress.live.stop()
    else:
        progress.stop()
