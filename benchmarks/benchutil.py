"""What the benchmarks share: one-line failures (no traceback) for a missing peer library, unusable audio or options,
and the set-up of peers more than one benchmark runs (Essentia's import, librosa's key profiles).

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

import numpy as np

# the extra that brings each optional library (pyproject.toml); `bench` holds train's and Essentia
EXTRAS = {"torch": "bench", "librosa": "bench", "pyloudnorm": "bench", "pandas": "bench", "onnx": "bench",
          "essentia": "bench", "ray": "ray", "requests": "collect", "fastapi": "serve"}
# Krumhansl-Kessler key profiles (C major, C minor): the librosa peer's key, by correlation with the mean chroma
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def kk_key(chroma: np.ndarray) -> tuple[int, int]:
    """(key pitch class, mode 1 major / 0 minor) of a 12-bin mean chroma, by its best correlation with a rotated
    Krumhansl-Kessler profile: the librosa peer's key in bench_descriptors and bench_measured alike."""
    corr = [[np.corrcoef(chroma, np.roll(p, k))[0, 1] for k in range(12)] for p in (KK_MINOR, KK_MAJOR)]
    mode, key = np.unravel_index(int(np.nanargmax(corr)), (2, 12))
    return int(key), int(mode)


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


def essentia_standard():
    """`essentia.standard`, the Essentia peers' algorithms, imported with Essentia's INFO log off: its
    '[ INFO ] MusicExtractorSVM: ...' line on import is not the benchmark's to print."""
    import essentia

    essentia.log.infoActive = False
    import essentia.standard as es

    return es


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
