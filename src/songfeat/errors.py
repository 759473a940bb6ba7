"""The one error type users see: it names the file and the reason in one line."""
from __future__ import annotations

from pathlib import Path


class SongfeatError(Exception):
    """A user-facing failure about one input: `str(err)` is '<path>: <reason>'."""

    def __init__(self, path: str | Path | None, reason: str):
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path else reason)

    def __reduce__(self):
        """Pickle as (path, reason): the default would call __init__ with the one formatted message and fail in the
        process that unpickles it (a worker's error then broke a whole process pool)."""
        return (type(self), (self.path, self.reason))


class WorkFailed(SongfeatError):
    """The work ran and failed (README, "Exit status": 1), where a plain SongfeatError from a command is a refusal
    before any work (2): clips that would not analyse left too few to fit or score, a result that could not be written.
    `failed` holds the error line of each input that could not be used, for the command to print."""

    def __init__(self, path: str | Path | None, reason: str, failed: list[str] | tuple[str, ...] = ()):
        super().__init__(path, reason)
        self.failed = list(failed)

    def __reduce__(self):
        return (type(self), (self.path, self.reason, self.failed))


class AudioError(SongfeatError):
    """The audio could not be read or is unusable (missing, empty, corrupt, silent, too short)."""


class CutOffAudioError(AudioError):
    """The file holds less audio than its header promises: a copy or a download that broke off (worth fetching again)."""


def analysis_failed(path: str | Path, why: BaseException | str) -> str:
    """The error line of a file whose analysis failed unexpectedly (a library's exception, or a worker's one-line account
    of how it failed): analyze, the record cache and evaluate-audio's clip reading say it alike, in one line."""
    if isinstance(why, BaseException):
        why = f"{type(why).__name__}: {str(why).strip()[:200]}"
    return f"{path}: analysis failed ({why})"


def existing_ancestor(path: str | Path) -> Path:
    """`path` itself or its nearest ancestor that exists: where a folder for `path` would be made (a file there means
    it cannot be; its permissions say whether it may)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def no_folder(path: str | Path) -> str:
    """Why `path` cannot be the folder an option names: 'no such folder', or what it is instead ('is a file, not a
    folder'), for the refusal line (an existing file was said to be 'no such folder')."""
    p = Path(path)
    if not p.exists():
        return "no such folder"
    return "is a file, not a folder" if p.is_file() else "is not a folder"


def missing_package(e: ModuleNotFoundError) -> str:
    """The top-level package a ModuleNotFoundError lacks ('torch' for torch.nn; '' unnamed): which extra to name."""
    return (e.name or "").split(".")[0]


def needs_extra(command: str, extra: str) -> str:
    """The one-line message for a command (or a function) run without the extra it needs."""
    return f"{command} needs the '{extra}' extra: pip install 'songfeat[{extra}]'"


def counted(n: int, noun: str, plural: str = "") -> str:
    """`n` and its noun in the number it takes, '1 clip' but '0 clips' (messages said '1 clips'); `plural` when adding
    an s will not do, or to carry a verb along: counted(n, "track has", "tracks have")."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


class SongfeatWarning(UserWarning):
    """A user-facing warning about one input ('<path>: <what>'); batch front-ends print it as `songfeat: warning:`."""
