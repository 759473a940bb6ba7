"""Worker processes for batches: one job at a time each, a time limit per job, and nothing leaking to the terminal.

`run_jobs` hands jobs to a few long-lived worker processes over pipes. A job that overruns its time
limit has its worker killed (SIGKILL) and replaced; a job that crashes its worker (a decoder
segfault, the OOM killer) fails alone. Each worker points its fd 1 and fd 2 at a private temporary
file, and every reply carries what was written there during the job, so native libraries' chatter
is returned with the job it belongs to (never interleaved between workers) and the parent decides
what to print.

A job may ask for more time once it knows how big its input is (`allow`), e.g. a long song, and may say how far it has
got (`report_progress`), which the batch process, holding the real terminal, may draw.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

from .errors import SongfeatError

PRELOAD: tuple[str, ...] = ()  # modules the fork server imports once; callers name their own (analyze.analysis_preload)
START_SECONDS = 300.0  # a worker that is not ready this long after starting is taken as broken
_JOB: dict = {}  # in a worker: the connection and job number, for allow()


@dataclass
class JobResult:
    """How one job ended: `status` is ok, error (it raised), timeout or crashed; `log` is what it printed."""

    index: int
    status: str
    value: object = None  # the return value (ok) or a one-line description (error, timeout, crashed)
    log: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def with_output(log: str | None, path: str, printed: str) -> str:
    """`log` then what a worker printed during `path`'s job outside any decoder capture (library chatter), one
    '<path>: output: ...' line each: how a batch (analyze, the store build) files that output under its file."""
    return "\n".join(x for x in (log, *(f"{path}: output: {ln}" for ln in printed.splitlines() if ln.strip())) if x)


def allow(seconds: float) -> None:
    """From inside a job: raise this job's time limit to `seconds` from its start (never lowers it; no-op outside workers)."""
    conn = _JOB.get("conn")
    if conn is not None:
        conn.send(("allow", _JOB["index"], float(seconds), ""))


def report_progress(value: object) -> None:
    """From inside a job: hand `value` (how far the job has got) to run_jobs' `on_progress` in the batch process, whose
    stderr is the terminal's (the worker's own fd 2 is a capture file); a no-op outside workers."""
    conn = _JOB.get("conn")
    if conn is not None:
        conn.send(("progress", _JOB["index"], value, ""))


def _drain(f) -> str:
    """Read and empty the worker's capture file."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass
    f.seek(0)
    text = f.read().decode("utf-8", "replace")
    f.seek(0)
    f.truncate()
    return text


def _die_with_parent(pid: int) -> None:
    """End this worker when the batch process `pid` is gone, even in the middle of a hung decode.

    Workers are children of the fork server, which itself lives as long as any worker does, so
    neither the parent's exit nor PR_SET_PDEATHSIG would reach a worker stuck in a decoder.
    """
    import threading

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:  # alive, under another user (cannot happen for our own parent)
                pass

    threading.Thread(target=watch, name="songfeat-parent-watch", daemon=True).start()


def _worker_main(conn: Connection, fn: Callable, init: Callable | None, init_args: tuple, parent: int) -> None:
    """A worker's life: capture fd 1/2, run `init`, then answer jobs until told to stop (or the batch process is gone)."""
    _die_with_parent(parent)
    capture = tempfile.TemporaryFile()
    os.dup2(capture.fileno(), 1)
    os.dup2(capture.fileno(), 2)
    try:
        if init is not None:
            init(*init_args)
    except SongfeatError as e:
        conn.send(("fatal", -1, (e.path, e.reason), _drain(capture)))
        return
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("fatal", -1, (None, f"worker start-up failed ({type(e).__name__}: {e})"), _drain(capture)))
        return
    conn.send(("ready", -1, None, _drain(capture)))
    _JOB["conn"] = conn
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        index, job = msg
        _JOB["index"] = index
        try:
            value, status = fn(job), "ok"
        except BaseException as e:  # noqa: BLE001 - a job's failure is its own result
            value, status = f"{type(e).__name__}: {e}", "error"
            if not isinstance(e, Exception):
                print(traceback.format_exc(), file=sys.stderr)
        conn.send((status, index, value, _drain(capture)))


def _context(preload: Sequence[str] = PRELOAD, fork: bool = False):
    """Where the next worker comes from: a fork of this process, else the fork server, else spawn.

    `fork`: fork this process itself (no new interpreter: a few ms instead of ~0.3 s of fork-server start-up
    for a batch) whenever it is safe at that moment, i.e. this process runs no other thread and has no
    onnxruntime session (whose native thread pool would not survive the fork) and no torch. Otherwise the
    fork server: workers fork from a process that imported `preload` once.
    """
    if fork and "fork" in mp.get_all_start_methods() and _fork_is_safe():
        return mp.get_context("fork")
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(list(preload))  # only counts before the server's first start
        return ctx
    return mp.get_context("spawn")  # pragma: no cover - Windows


def _fork_is_safe() -> bool:
    """No Python thread, no onnxruntime session, no torch: nothing whose threads hold locks the fork would copy.

    (torch's OpenMP pool is native and invisible to `threading`; numpy's OpenBLAS handles fork itself.)
    """
    import threading

    if threading.active_count() != 1 or "torch" in sys.modules:
        return False
    return not ("songfeat.runtime" in sys.modules and sys.modules["songfeat.runtime"].open_sessions())


class _Worker:
    def __init__(self, ctx, fn, init, init_args):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, fn, init, init_args, os.getpid()), daemon=True)
        self.proc.start()
        child.close()
        self.ready = False
        self.started = time.monotonic()
        self.index: int | None = None
        self.deadline = 0.0
        self.job_start = 0.0
        self.log = ""  # start-up output, handed on with the first job

    def send(self, index: int, job, timeout: float | None) -> None:
        self.index, self.job_start = index, time.monotonic()
        self.deadline = self.job_start + timeout if timeout else float("inf")
        self.conn.send((index, job))

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()


def _died(w: _Worker) -> str:
    code = w.proc.exitcode
    if code is not None and code < 0:
        import signal

        try:
            return f"its worker process died ({signal.Signals(-code).name})"
        except ValueError:
            pass
    return f"its worker process died (exit code {code})"


def run_jobs(fn: Callable, jobs: Sequence | Iterable, workers: int = 1, timeout: float | None = None,
             init: Callable | None = None, init_args: tuple = (), preload: Sequence[str] = PRELOAD,
             fork: bool = False, on_progress: Callable[[int, object], None] | None = None) -> Iterator[JobResult]:
    """Run `fn(job)` for every job in `workers` processes; yield a JobResult per job, in completion order.

    `timeout` (seconds, None for none) limits each job from the moment it is handed to a worker;
    `allow()` inside a job raises its own limit. `init(*init_args)` runs once per worker before its
    first job (outside any limit); a SongfeatError there stops the whole run and is raised here.
    `fn`, `init` and the jobs must be picklable; `preload` names modules the fork server imports once.
    `fork`: fork this process instead of starting the fork server, for each worker started while that is safe
    (see `_context`); a forked worker imports what it needs itself. `on_progress(index, value)` is called here, in this
    process, for each `report_progress(value)` a job makes.
    """
    jobs = list(jobs)
    if not jobs:
        return
    queue = list(range(len(jobs)))[::-1]  # pop() gives the next job in order
    pool: list[_Worker] = []

    def spawn() -> None:  # the start method is chosen per worker: a restart may find threads here that the first start did not
        pool.append(_Worker(_context(preload, fork=fork), fn, init, init_args))

    try:
        for _ in range(max(1, min(workers, len(jobs)))):
            spawn()
        done = 0
        while done < len(jobs):
            now = time.monotonic()
            next_deadline = min((w.deadline for w in pool if w.index is not None), default=float("inf"))
            wait_for = max(0.0, min(next_deadline - now, 1.0))
            readable = wait([w.conn for w in pool] + [w.proc.sentinel for w in pool], timeout=wait_for)
            for w in list(pool):
                if w.conn in readable or w.proc.sentinel in readable:
                    try:
                        status, index, value, log = w.conn.recv() if w.conn.poll() else (None, None, None, "")
                    except (EOFError, OSError):
                        status, index, value, log = None, None, None, ""
                    if status is None:  # the process ended without a reply
                        if w.proc.is_alive():
                            continue
                        pool.remove(w)
                        w.kill()
                        if w.index is None:
                            if not w.ready:
                                raise SongfeatError(None, f"a worker process failed to start ({_died(w)})")
                        else:
                            done += 1
                            yield JobResult(w.index, "crashed", _died(w), w.log, time.monotonic() - w.job_start)
                        if queue:
                            spawn()
                        continue
                    if status == "fatal":
                        raise SongfeatError(*value)
                    if status == "allow":
                        if w.index == index:
                            w.deadline = max(w.deadline, w.job_start + value)
                        continue
                    if status == "progress":
                        if on_progress is not None and w.index == index:
                            on_progress(index, value)
                        continue
                    if status == "ready":
                        w.ready, w.log = True, log
                    else:
                        done += 1
                        yield JobResult(index, status, value, w.log + log, time.monotonic() - w.job_start)
                        w.index, w.log = None, ""
                    if queue:
                        i = queue.pop()
                        w.send(i, jobs[i], timeout)
                    else:
                        pool.remove(w)
                        w.stop()
            now = time.monotonic()
            for w in list(pool):
                if w.index is not None and now > w.deadline:
                    pool.remove(w)
                    w.kill()
                    done += 1
                    yield JobResult(w.index, "timeout", f"timed out after {now - w.job_start:.3g} s (limit {w.deadline - w.job_start:.3g} s); "
                                    "its worker process was stopped", w.log, now - w.job_start)
                    if queue:
                        spawn()
                elif w.index is None and not w.ready and now - w.started > START_SECONDS:
                    raise SongfeatError(None, f"a worker process did not start within {START_SECONDS:.0f} s")
    finally:
        for w in pool:
            w.kill()

