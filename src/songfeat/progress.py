"""songfeat's progress on stderr, for work that iterates (clips read, clips analysed, epochs, seconds of one long file):
a transient bar when stderr is a terminal, else a plain line now and then (`INTERVAL`), so a log shows the job is alive.

Both go to stderr, never to stdout, where they would land in redirected results (`--format json > f.json`). Every bar is
made by `bar`, which also leaves stdout alone while it shows.
"""
from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from functools import cache
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from rich.progress import Progress

T = TypeVar("T")

#: Seconds between plain progress lines where stderr is not a terminal (a log file, a pipe); the environment variable
#: SONGFEAT_PROGRESS_INTERVAL overrides it. Work that ends within the first interval prints none.
INTERVAL = 30.0
INTERVAL_VARIABLE = "SONGFEAT_PROGRESS_INTERVAL"
_now = time.monotonic  # the plain lines' clock (a test sets its own)
_refused: set[str] = set()  # values of the variable already warned about: said once, not at every bar


def interval() -> float:
    """Seconds between plain progress lines: $SONGFEAT_PROGRESS_INTERVAL when it is a number >= 0, else `INTERVAL`
    (with a warning naming the value it could not use)."""
    raw = os.environ.get(INTERVAL_VARIABLE)
    if raw is None or not raw.strip():
        return INTERVAL
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if math.isfinite(seconds) and seconds >= 0:
        return seconds
    if raw not in _refused:
        _refused.add(raw)
        print(f"songfeat: warning: {INTERVAL_VARIABLE}={raw!r} is not a number of seconds >= 0; using {INTERVAL:g}",
              file=sys.stderr)
    return INTERVAL


def bar(*columns, show: bool = True, **options) -> Progress:
    """A rich Progress (`columns`, else rich's default ones; `options` as Progress takes them) drawn on stderr when
    `show` and stderr is a terminal. When `show` and stderr is not one, nothing is drawn: a plain line is printed at
    most every `interval()` seconds as its tasks advance, and a last one when it stops if any was. Without `show` it is
    disabled: its tasks still count, nothing is printed.

    Stdout is left alone (redirect_stdout=False): rich's default sends whatever is written to stdout while a bar shows
    through the bar's console, onto the terminal, so results redirected to a file (`> out.jsonl`) did not reach it.
    Lines written to sys.stderr meanwhile are printed above the bar (rich's redirect_stderr), where they would go anyway.
    """
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    if show and not console.is_terminal:  # no refresh thread: lines are printed by the thread that advances a task
        return _lines_class()(*columns, console=console, redirect_stdout=False, redirect_stderr=False, disable=True,
                              **{**options, "auto_refresh": False})
    return Progress(*columns, console=console, redirect_stdout=False, redirect_stderr=True,
                    disable=not show, **options)


def _elapsed(seconds: float) -> str:
    """`seconds` as a log line says it: 45 s, 3 min, 2 h 05 min."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


@cache
def _lines_class() -> type:
    """The Progress that prints plain lines instead of drawing (made on first use: rich is imported only then)."""
    from rich.errors import MarkupError
    from rich.progress import Progress, TaskID
    from rich.text import Text

    class Lines(Progress):
        """A disabled Progress that says how far its tasks are in a line on stderr, at most every `interval()` s."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.every = interval()
            self.began = self.last = _now()
            self.said = self.ended = False

        def start(self) -> None:
            super().start()
            self.began = self.last = _now()

        def advance(self, task_id: TaskID, advance: float = 1) -> None:
            super().advance(task_id, advance)
            self._tell(task_id)

        def update(self, task_id: TaskID, **kwargs) -> None:
            super().update(task_id, **kwargs)
            self._tell(task_id)

        def stop(self) -> None:
            super().stop()
            if self.said and not self.ended:  # a last line only after others: short work stays silent
                self.ended = True
                for task in self.tasks:
                    self._say(task, " (end)" if not task.total else " (done)" if task.finished else " (stopped)")

        def _tell(self, task_id: TaskID) -> None:
            now = _now()
            if now - self.last >= self.every and not self.ended:
                self.last, self.said = now, True
                self._say(self._tasks[task_id])

        def _say(self, task, end: str = "") -> None:
            try:  # the description as a bar shows it, markup taken out
                what = Text.from_markup(str(task.description)).plain
            except MarkupError:
                what = str(task.description)
            done = f"{task.completed:.0f}"
            if task.total:
                done += f"/{task.total:.0f} ({min(task.completed / task.total, 1.0):.0%})"
            if sys.stderr is not None:
                print(f"songfeat: {what}: {done}, {_elapsed(_now() - self.began)} elapsed{end}",
                      file=sys.stderr, flush=True)

    return Lines


def track(items: Iterable[T], label: str, total: int | None = None) -> Iterator[T]:
    """`items` passed through a transient progress bar (`bar`: plain lines off a terminal) labelled `label` (`total`
    when `items` has no len)."""
    with bar(transient=True) as p:
        yield from p.track(items, total=total, description=label)


__all__ = ["bar", "track", "interval", "INTERVAL"]
