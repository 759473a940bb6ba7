"""songfeat's transient progress bars on stderr, for work that iterates (clips read, clips analysed, epochs, seconds of
one long file).

Callers show them when stderr is a terminal; they are drawn there, never on stdout, where they would land in redirected
results (`--format json > f.json`). Every bar is made by `bar`, which also leaves stdout alone while it shows.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from rich.progress import Progress

T = TypeVar("T")


def bar(*columns, show: bool = True, **options) -> Progress:
    """A rich Progress (`columns`, else rich's default ones; `options` as Progress takes them) drawn on stderr, and only
    when `show` and stderr is a terminal (otherwise disabled: its tasks still count, nothing is drawn).

    Stdout is left alone (redirect_stdout=False): rich's default sends whatever is written to stdout while a bar shows
    through the bar's console, onto the terminal, so results redirected to a file (`> out.jsonl`) did not reach it.
    Lines written to sys.stderr meanwhile are printed above the bar (rich's redirect_stderr), where they would go anyway.
    """
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    return Progress(*columns, console=console, redirect_stdout=False, redirect_stderr=True,
                    disable=not (show and console.is_terminal), **options)


def track(items: Iterable[T], label: str, total: int | None = None) -> Iterator[T]:
    """`items` passed through a transient progress bar (`bar`) labelled `label` (`total` when `items` has no len)."""
    with bar(transient=True) as p:
        yield from p.track(items, total=total, description=label)


__all__ = ["bar", "track"]
