"""A rich progress bar over solver steps, on stderr."""

from __future__ import annotations

from typing import Any


def progress_factory():
    """A rich progress bar (on stderr) over solver steps, one task per generation."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=Console(stderr=True))

    def factory(label: str, total: int):
        task = progress.add_task(label, total=total)

        def step(k: int, n: int, _x: Any) -> None:
            progress.update(task, completed=k + 1, total=n)

        return step

    return progress, factory
