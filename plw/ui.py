"""Console output: the one progress bar (with ETA), tables and consoles, all on rich.

Every long loop in plw shows its progress through `progress_bar`; `--no-progress` reaches it as
`enabled=False`, which makes it a no-op. rich is imported only when something is shown.
"""

from __future__ import annotations

import contextlib


def console(*, stderr: bool = False):
    """A rich console; progress and messages go to stderr, results to stdout."""
    from rich.console import Console

    return Console(stderr=stderr)


def table(*columns: str, title: str | None = None, **kwargs):
    """A rich table with these column headers (add rows with `.add_row`)."""
    from rich.table import Table

    t = Table(title=title, title_justify="left", **kwargs) if title else Table(**kwargs)
    for c in columns:
        t.add_column(c)
    return t


def fmt_seconds(seconds: float) -> str:
    """12s, 3m05s, 2h07m."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class progress_bar:  # noqa: N801 (used as a context manager)
    """A progress bar on stderr: description, bar, done/total, an info field, elapsed time and ETA.

    `with progress_bar(enabled, "tokenising", total) as bar: bar.advance(n)`; also
    `bar.update(completed=, description=, info=)`. Disabled, every call does nothing.
    `transient` bars disappear when done.
    """

    def __init__(self, enabled: bool, description: str, total: int | None, *, transient: bool = True):
        self.enabled, self.description, self.total, self.transient = enabled, description, total, transient
        self._bar = self._task = None

    def __enter__(self) -> "progress_bar":
        if not self.enabled:
            return self
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                             transient=self.transient, console=console(stderr=True))
        self._bar.start()
        self._task = self._bar.add_task(self.description, total=self.total, info="")
        return self

    def advance(self, n: float = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def update(self, *, completed: float | None = None, description: str | None = None,
               info: str | None = None) -> None:
        if self._bar is None:
            return
        fields = {k: v for k, v in (("completed", completed), ("description", description), ("info", info))
                  if v is not None}
        self._bar.update(self._task, **fields)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __exit__(self, *exc) -> bool:
        self.stop()
        return False


@contextlib.contextmanager
def quiet_hf_bars():
    """No transformers tqdm bars ("Loading weights", "Writing model shards") for the duration: plw
    shows its own progress, or none under `--no-progress`."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    if was_on:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
