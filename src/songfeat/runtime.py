"""Where the shipped models run: onnxruntime sessions (the default, and all a lean install has) or torch.

`backend()` is "onnx" unless SONGFEAT_BACKEND=torch asks for the torch modules the ONNX files were
exported from (the research pipeline's reference path; needs the `train` extra). Sessions are created
on first use and cached per file, with `threads()` intra-op threads: every usable CPU up to 4 for a
process analysing alone, 1 in batch workers (`set_threads(1)`: N workers use N cores, not N x cores).
Thread spinning is off, so an idle session does not burn a core beside other work. `set_threads` also
caps numpy's BLAS pool (threadpoolctl): OpenBLAS threads spin after each product, and two workers
each running two of them on two cores took 1.0 s a clip instead of 0.6 (the CLI already sets
OPENBLAS_NUM_THREADS=1 before numpy loads; this covers the Python API, Ray workers and builds).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BACKENDS = ("onnx", "torch")
MAX_THREADS = 4  # beyond this the small musicnn graphs stop scaling
_threads: int | None = None


def backend() -> str:
    """The inference backend: SONGFEAT_BACKEND (onnx or torch), default onnx."""
    b = os.environ.get("SONGFEAT_BACKEND", "onnx").strip().lower() or "onnx"
    if b not in BACKENDS:
        from .errors import SongfeatError

        raise SongfeatError(None, f"SONGFEAT_BACKEND must be onnx or torch, not {b!r}")
    return b


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def capped_workers(n: int, setting: str) -> tuple[int, str | None]:
    """A local process pool's worker count: at most one per usable CPU (each worker holds the model, up to ~0.75 GB, so
    more cost memory and gain nothing), and the warning to print when `n` was more; `setting` names it (`--workers 9`,
    `SONGFEAT_WORKERS=9`)."""
    cpus = usable_cpus()
    if n <= cpus:
        return n, None
    return cpus, f"{setting} is more than the {cpus} usable CPUs here; using {cpus}"


def threads() -> int:
    """Intra-op threads of new sessions: set_threads()'s value, else min(usable CPUs, MAX_THREADS)."""
    return _threads if _threads is not None else max(1, min(usable_cpus(), MAX_THREADS))


def set_threads(n: int) -> None:
    """Threads for sessions created from now on, numpy's BLAS and torch's (when loaded): batch workers use 1."""
    global _threads
    _threads = max(1, int(n))  # sessions are keyed by their thread count: new ones are made on next use
    import sys

    import numpy  # noqa: F401  (loads the BLAS library threadpoolctl limits)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=_threads, user_api="blas")  # for the rest of the process, as the sessions' count
    if "torch" in sys.modules:  # never import torch just to configure it
        sys.modules["torch"].set_num_threads(_threads)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to `n` inside the block, the caller's restored after it. A fit's last bits
    depend on how many threads split its sums, so a fit that must rebuild the same bytes on any machine names its count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_SESSIONS: dict[tuple, object] = {}
_ORPHANS: list = []  # sessions inherited through fork(): their thread pools did not survive it, so they are never used or freed


def session(path: str | Path, n_threads: int | None = None):
    """An onnxruntime session for one model file, created once per process (per file version and thread count).

    `n_threads`: intra-op threads for a model that wants a fixed number (the VAD's sequential LSTM: 1);
    default `threads()`.
    """
    st = os.stat(path)
    n = threads() if n_threads is None else max(1, int(n_threads))
    key = (str(path), st.st_mtime_ns, st.st_size, n)
    if key not in _SESSIONS:
        _SESSIONS[key] = _new_session(str(path), n)
    return _SESSIONS[key]


def open_sessions() -> int:
    """How many sessions this process holds (their native thread pools would not survive a fork)."""
    return len(_SESSIONS)


def session_options(n_threads: int):
    """The onnxruntime options every songfeat session runs with: `n_threads` intra-op threads, one inter-op, no
    spinning (idle threads would steal the other worker's core), warnings off. Benchmarks build on them."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = n_threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


def _new_session(path: str, n_threads: int):
    """A session for `path`; a file onnxruntime cannot load (damaged, cut off, not ONNX) is a SongfeatError naming it,
    not an onnxruntime error reported against the audio file being analysed."""
    import onnxruntime as ort

    from .errors import SongfeatError

    try:
        return ort.InferenceSession(path, sess_options=session_options(n_threads), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
        why = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise SongfeatError(path, f"cannot load this ONNX model ({why}); a damaged file? reinstall songfeat, "
                                  "or write a bundle's again with songfeat export-onnx") from None


def _after_fork_in_child() -> None:
    """A forked child (a multiprocessing 'fork' worker) opens its own sessions: the parent's thread pools are not here."""
    _ORPHANS.extend(_SESSIONS.values())
    _SESSIONS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


__all__ = ["backend", "capped_workers", "session", "session_options", "set_threads", "threads", "torch_threads",
           "usable_cpus", "BACKENDS"]
