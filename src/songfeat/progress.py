"""One transient progress bar on stderr, for work that iterates (clips read, clips analysed, epochs).

Callers show it when stderr is a terminal; it is drawn there, never on stdout, where it would land in redirected
results (`--format json > f.json`).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def track(items: Iterable[T], label: str, total: int | None = None) -> Iterator[T]:
    """`items` passed through a transient rich progress bar on stderr, labelled `label` (`total` when `items` has no len)."""
    from rich.console import Console
    from rich.progress import track as rich_track

    return iter(rich_track(items, total=total, description=label, console=Console(stderr=True), transient=True))


__all__ = ["track"]
