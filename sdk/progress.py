"""Step progress for long CLI commands: rich spinners with elapsed time on a terminal, plain lines elsewhere.

Library code reports steps through a ``progress(msg)`` callable; this module is the CLI's
implementation of it. On a TTY each step shows a spinner while it runs and its elapsed time once
the next step starts; in pipes and CI logs each step is one ``- msg`` line on stderr.

Example::

    say = StepProgress()
    say("exporting model.onnx"); ...; say("checking model.onnx against PyTorch"); ...
    say.close()
"""
from __future__ import annotations

import sys
from typing import Any

import click


class StepProgress:
    """Callable progress sink; ``quiet`` silences it; ``close()`` ends the live display."""

    def __init__(self, quiet: bool = False, live: bool | None = None) -> None:
        self.quiet = quiet
        self.live = sys.stderr.isatty() if live is None else live
        self._progress: Any = None
        self._task: Any = None

    def __call__(self, msg: str) -> None:
        if self.quiet:
            return
        if not self.live:
            click.secho(f"- {msg}", err=True, dim=True)
            return
        if self._progress is None:
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(SpinnerColumn(finished_text="[green]✓"), TextColumn("{task.description}"),
                                      TimeElapsedColumn(), console=Console(stderr=True))
            self._progress.start()
        self._finish()
        self._task = self._progress.add_task(msg, total=1)

    def _finish(self) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=1)
            self._task = None

    def close(self) -> None:
        if self._progress is not None:
            self._finish()
            self._progress.stop()
            self._progress = None
