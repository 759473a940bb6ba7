"""Atomic file writes: a temporary file beside the target, fsynced, then renamed onto it, so readers never see half a file.

A write that fails (or is interrupted) leaves the old file as it was and removes its temporary. The temporary is
hidden and named `.<name>.<pid>.<random>.tmp`, in the target's folder so that `os.replace` is a rename on one file
system. Errors are not reworded here: each caller says what a failed write means for its own files.

`probe_folder` checks beforehand that a folder can take such writes, for callers with minutes of work ahead of theirs.
`make_folders` makes an output's missing folders and says which it made, so that a run which then writes nothing can
take them away again (`remove_folders`), as a failed write takes its temporary away.
`RunLock` is the lock every writer of a file or bundle output holds for its whole run (`<output>.lock`, an flock), so a second run
on the same output is refused at once rather than interleaving its writes with the first's or replacing its result.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from .errors import SongfeatError

LOCK_SUFFIX = ".lock"  # `<output>.lock`: held (flock) by the run writing <output>; the OS lets go when that run ends


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


_HELD: "weakref.WeakSet[RunLock]" = weakref.WeakSet()  # this process's run locks, for a forked child to drop


def _drop_in_child() -> None:
    """In a forked child (an analysis worker): close the inherited lock descriptors without unlocking, so a lock lasts
    as long as the run that took it, not as long as a worker it left behind."""
    for lock in list(_HELD):
        lock.forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_in_child)


class RunLock:
    """An exclusive, non-blocking flock on `<output>.lock` beside `output` (a file or a folder), held by the one run
    writing it, from its start to its end (`release()`, or the end of a `with` block).

    The OS releases a flock when its process ends, however it ends, so a lock file a killed run left behind is taken
    over, not obeyed. The holder writes its pid into the file (for the refusal) and removes it when it lets go.
    Raises `error(output, reason)` when another run holds it: 'is being written by another songfeat run (pid N); wait
    for it to end, or <advice>'. Without flock (Windows, a file system that refuses it) the output is written unguarded.
    """

    def __init__(self, output: str | os.PathLike[str], advice: str = "name another output",
                 error: Callable[[Path, str], SongfeatError] = SongfeatError):
        output = Path(output)
        whole = Path(os.path.abspath(output))  # `.` (a bundle into the current folder) has no name of its own
        if not whole.name:
            raise error(output, "is the root folder: name a file or folder inside it")
        self.path = whole.with_name(whole.name + LOCK_SUFFIX)
        self.fd: int | None = None
        self.made: list[Path] = []  # the output's folders this lock made: removed again by release() while empty
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no flock
            return
        try:
            self.made = make_folders(output.parent)
            while True:
                try:
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
                except FileNotFoundError:  # a run that made this folder and wrote nothing took it away meanwhile
                    self.made += make_folders(output.parent)
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _lock_holder(fd)
                    os.close(fd)
                    raise error(output, f"is being written by another songfeat run{holder}; wait for it to end, "
                                        f"or {advice}") from None
                except OSError:  # no flock on this file system (some network mounts)
                    os.close(fd)
                    return
                if _names(self.path, fd):
                    break
                os.close(fd)  # the run before removed it between our open and our flock: lock the file there now
            self.fd = fd
            _HELD.add(self)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except SongfeatError:
            self.release()  # the folders made for an output another run holds, or that cannot be written, go again
            raise
        except OSError as e:  # the output is named, not the lock file beside it, which is songfeat's own
            self.release()
            raise error(output, f"cannot write it ({e.strerror or e})") from None

    def release(self) -> None:
        """Remove the lock file (only while it is still this lock's own) and let go, then the folders it made for the
        output while nothing else is in them (a run that wrote nothing leaves none behind); again, or after forget(),
        nothing."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                if _names(self.path, self.fd):
                    os.unlink(self.path)  # while still locked: a run that opened it meanwhile finds it gone, makes its own
            os.close(self.fd)
            self.fd = None
            _HELD.discard(self)
        remove_folders(self.made)
        self.made = []

    def forget(self) -> None:
        """Close this descriptor without unlocking or removing anything (a forked child's copy; the parent holds on)."""
        self.made = []  # the parent's to remove, not a worker's
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # a writer dropped without close(): the lock goes with it
            self.release()


def _names(path: Path, fd: int) -> bool:
    """Whether `path` is still the file open as `fd` (not removed, nor replaced by another run's)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


def _lock_holder(fd: int) -> str:
    """' (pid N)' from a held lock file, or '' when it says nothing readable (its holder has not written it yet)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (pid {text})" if text.isdigit() else ""


__all__ = ["replacing", "temp_beside", "probe_folder", "make_folders", "remove_folders", "RunLock", "LOCK_SUFFIX"]
