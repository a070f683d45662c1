"""Step progress for long CLI commands: rich spinners with elapsed time on a terminal, plain lines elsewhere.

Library code reports steps through a ``progress(msg)`` callable; this module is the CLI's
implementation of it. On a TTY each step shows a spinner while it runs and its elapsed time once
the next step starts; in pipes and CI logs each step is one ``- msg`` line on stderr.

Steps with a known length (recovery steps, calibration batches, benchmark iterations) also report
``progress.count(done, total)`` when the sink has that method (``counter(sink)`` finds it); on a
TTY the step then shows a bar, ``done/total`` and the time left at the current rate. Plain sinks (a lambda, a logger) just ignore counts.

Example::

    say = StepProgress()
    say("exporting model.onnx"); ...; say("checking model.onnx against PyTorch"); ...
    say.close()
"""
from __future__ import annotations

import sys
from typing import Any, Callable

import click

Counter = Callable[[int, int], None]


def counter(sink: Any) -> Counter | None:
    """The ``count(done, total)`` method of a progress sink, or None when it has none."""
    fn = getattr(sink, "count", None)
    return fn if callable(fn) else None


def _columns() -> list[Any]:
    from rich.progress import (BarColumn, ProgressColumn, SpinnerColumn, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)
    from rich.text import Text

    class CountedBar(BarColumn):
        def render(self, task: Any) -> Any:
            return super().render(task) if task.fields.get("counted") else Text("")

    class CountText(ProgressColumn):
        def render(self, task: Any) -> Any:
            return Text(f"{int(task.completed)}/{int(task.total or 0)}") if task.fields.get("counted") else Text("")

    class Eta(TimeRemainingColumn):
        def render(self, task: Any) -> Any:  # counted steps only: a spinner step has no rate to extrapolate
            if not task.fields.get("counted") or task.finished:
                return Text("")
            return Text("eta ") + super().render(task)

    return [SpinnerColumn(finished_text="[green]✓"), TextColumn("{task.description}"), CountedBar(bar_width=24),
            CountText(), TimeElapsedColumn(), Eta()]


class StepProgress:
    """Callable progress sink; ``quiet`` silences it; ``close()`` ends the live display."""

    def __init__(self, quiet: bool = False, live: bool | None = None, console: Any = None) -> None:
        self.quiet = quiet
        self.live = sys.stderr.isatty() if live is None else live
        self._console = console  # a rich Console; default: stderr
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
            from rich.progress import Progress

            self._progress = Progress(*_columns(), console=self._console or Console(stderr=True))
            self._progress.start()
        self._finish()
        self._task = self._progress.add_task(msg, total=1, counted=False)

    def count(self, done: int, total: int) -> None:
        """How far the current step is (``done`` of ``total``); drawn as a bar on a terminal."""
        if self.quiet or not self.live or self._task is None or total <= 0:
            return
        self._progress.update(self._task, completed=min(done, total), total=total, counted=True)

    def _finish(self) -> None:
        if self._task is not None:
            task = next(t for t in self._progress.tasks if t.id == self._task)
            self._progress.update(self._task, completed=task.total or 1)
            self._task = None

    def close(self) -> None:
        if self._progress is not None:
            self._finish()
            self._progress.stop()
            self._progress = None
