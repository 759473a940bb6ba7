"""What the benchmarks share: one-line failures (no traceback) for a missing peer library, unusable audio or options.

Not a benchmark itself. Each script imports it from its own folder (`python benchmarks/x.py` puts that folder first
on sys.path); a benchmark measures nothing useful without its peers or its audio, so it stops before the work and
says why in one line, as `songfeat` itself does.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

# the extra that brings each optional library (pyproject.toml); `bench` holds train's and Essentia
EXTRAS = {"torch": "bench", "librosa": "bench", "pyloudnorm": "bench", "pandas": "bench", "onnx": "bench",
          "essentia": "bench", "ray": "ray", "requests": "collect", "fastapi": "serve"}


def shared_data() -> Path:
    """The shared data folder: $SONGFEAT_SHARED/data when set (as the tests read it), else ../shared/data beside the
    repository."""
    return Path(os.environ.get("SONGFEAT_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data"


def prog() -> str:
    """The running benchmark's name, as its messages start."""
    return Path(sys.argv[0]).stem or "benchmark"


def fail(message: str) -> SystemExit:
    """The SystemExit (status 1) that prints '<benchmark>: <message>' on one line; raise it."""
    return SystemExit(f"{prog()}: " + " ".join(str(message).split()))


def unavailable(module: str, why: str = "") -> str | None:
    """Why `module` cannot be used here, naming the extra that installs it, or None when it imports.

    An import, not a lookup: a library that is present but broken fails here too, not in the middle of a run."""
    try:
        importlib.import_module(module)
    except ImportError as e:
        missing = isinstance(e, ModuleNotFoundError) and (e.name or "").split(".")[0] == module
        what = "is not installed" if missing else f"cannot be imported ({e})"
        return (f"{module} {what}{'; ' + why if why else ''}: "
                f"pip install -c constraints.txt -e '.[{EXTRAS.get(module, 'bench')}]'")
    return None


def require(*modules: str, why: str = "") -> None:
    """Import each module or stop with one line naming the missing one and the extra that installs it."""
    for m in modules:
        reason = unavailable(m, why)
        if reason is not None:
            raise fail(reason)


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn songfeat's user-facing errors ('<path>: <reason>', e.g. an unreadable clip) into a one-line exit."""
    from songfeat.errors import SongfeatError

    try:
        yield
    except SongfeatError as e:
        raise fail(str(e)) from None


def readable(files: list[Path]) -> list[Path]:
    """`files` if every one decodes (songfeat's own probe, no decoding of the audio itself), else a one-line exit
    naming the first that does not: a benchmark over a file its peers cannot read measures their error paths."""
    from songfeat.audio import audio_info

    with one_line_errors():
        for f in files:
            audio_info(f)
    return files


def at_least_one(**options: int | None) -> None:
    """Stop with one line if a count option (files, repeats, runs) is below 1: there would be nothing to time."""
    for name, v in options.items():
        if v is not None and v < 1:
            raise fail(f"--{name.replace('_', '-')} must be at least 1, got {v}")
