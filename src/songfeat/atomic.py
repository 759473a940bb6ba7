"""Atomic file writes: a temporary file beside the target, fsynced, then renamed onto it, so readers never see half a file.

A write that fails (or is interrupted) leaves the old file as it was and removes its temporary. The temporary is
hidden and named `.<name>.<pid>.<random>.tmp`, in the target's folder so that `os.replace` is a rename on one file
system. Errors are not reworded here: each caller says what a failed write means for its own files.

`probe_folder` checks beforehand that a folder can take such writes, for callers with minutes of work ahead of theirs.
`make_folders` makes an output's missing folders and says which it made, so that a run which then writes nothing can
take them away again (`remove_folders`), as a failed write takes its temporary away.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any


def _temporary(path: Path) -> Path:
    """A fresh hidden name beside `path` (unique per process and per call, so concurrent writers never share one)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str], mode: str = "w", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Yield a file open (`open(tmp, mode, **open_kwargs)`) on a temporary beside `path`; flush, fsync and rename it
    onto `path` on a normal exit, or close and remove it and re-raise on an exception."""
    path = Path(path)
    tmp = _temporary(path)
    f = open(tmp, mode, **open_kwargs)
    try:
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # a close that fails too must not hide the first error
            f.close()
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def temp_beside(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path` for writers that take a path (Parquet, savefig); fsync it and rename it
    onto `path` on a normal exit, or remove it (if it was made) and re-raise on an exception."""
    path = Path(path)
    tmp = _temporary(path)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDWR)  # read-write: Windows refuses to fsync a read-only descriptor
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def probe_folder(folder: str | os.PathLike[str], name: str | None = None) -> None:
    """Make `folder` (and its parents) if missing, then create and remove a hidden entry in it (`.<name>.probe-*`):
    raises the OSError of a place that cannot be written (read-only, not a folder, no permission), so work whose
    results are to be written there is refused before it starts rather than failing at its end."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    os.rmdir(tempfile.mkdtemp(prefix=f".{name}.probe-" if name else ".probe-", dir=folder))


def make_folders(folder: str | os.PathLike[str]) -> list[Path]:
    """Make `folder` and its missing parents (as `mkdir(parents=True, exist_ok=True)`) and return the ones this call
    made, outermost first, for `remove_folders`: folders made for an output that is then never written are not left
    behind."""
    folder = Path(folder)
    missing = []
    p = folder
    while not p.is_dir() and p != p.parent:
        missing.append(p)
        p = p.parent
    made: list[Path] = []
    try:
        for p in reversed(missing):
            try:
                os.mkdir(p)
            except FileExistsError:
                if not p.is_dir():  # a file in the way: what mkdir(parents=True, exist_ok=True) raises too
                    raise
                continue  # another process made it meanwhile: its folder, not ours to remove
            made.append(p)
    except BaseException:
        remove_folders(made)
        raise
    return made


def remove_folders(made: Iterable[str | os.PathLike[str]]) -> None:
    """Remove folders `make_folders` made, innermost first, each only while it is empty: one that has been written into
    since (a result, a `.partial`, another run's lock) is kept, and so are its parents."""
    for p in reversed(list(made)):
        try:
            os.rmdir(p)
        except OSError:  # not empty (or gone, or not ours to remove any more): keep it and everything above it
            return


__all__ = ["replacing", "temp_beside", "probe_folder", "make_folders", "remove_folders"]
