"""The progress bar of long loops (training steps, sampling steps): rich, on stderr, gone when done.

rich draws every progress display of flaresynth (the CLI's tables, the demo's stage display, the dataset build);
this is its bar for loops that advance by counts and report a few figures as they go (loss, images/s).
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class ProgressBar:
    """A bar of ``total`` units on stderr, started at ``initial``; ``update``/``set_postfix``/``close`` as in tqdm.

    Drawn only when stderr is a terminal, so logs and pipes get no control characters.
    """

    def __init__(self, total: int, description: str, unit: str = "step", initial: int = 0):
        console = Console(stderr=True)
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn(unit), TimeElapsedColumn(), TextColumn("<"), TimeRemainingColumn(),
                                  TextColumn("{task.fields[postfix]}"), console=console, transient=True,
                                  disable=not console.is_terminal)
        self._task = self._progress.add_task(description, total=total, completed=initial, postfix="")
        self._progress.start()

    def update(self, n: int = 1) -> None:
        """Advance by ``n`` units."""
        self._progress.advance(self._task, n)

    def set_postfix(self, **figures) -> None:
        """Show ``name value`` pairs after the bar (e.g. loss, images/s)."""
        self._progress.update(self._task, postfix="  ".join(f"{k} {v}" for k, v in figures.items()))

    def close(self) -> None:
        """Stop drawing and clear the bar."""
        self._progress.stop()
