"""Analyze a catalogue on a Ray cluster: Ray Data lists the inputs, an actor pool analyzes them, Parquet comes out.

The only module that imports ray (lazily, so the base install stays lean: `pip install 'songfeat[ray]'`).
It is a thin skin over the Python API: every actor loads the model once and runs
`songfeat.analyze.analyze_many` on its batches in-process, so rows are the local engine's, bit for bit.

`analyze_to_parquet` is the resumable job behind `songfeat analyze --engine ray`. Its output folder:

    _songfeat.json      the manifest: model, committed parts and their row counts, "complete"
    part-<run>-<k>/     one committed chunk, written by Ray's write_parquet
    _staging/           Ray writes a chunk here first (Parquet readers skip "_" names)
    _lock               an flock held while a run writes the folder

A chunk is written into `_staging/`, renamed into place, then added to the manifest. A rerun skips
tracks whose path (or Spotify-id file name) is already in a committed part, so a job killed at any
moment, driver or worker, finishes with every track exactly once.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import __version__, atomic
from .bundle import fingerprint as bundle_fingerprint, model_id
from .errors import SongfeatError
from .output import OutputError, utf8_text

MANIFEST = "_songfeat.json"
STAGING = "_staging"
LOCK = "_lock"
FORMAT = "songfeat-features/1"
BATCH_SIZE = 16  # tracks per actor call: measured ~0.14 s of Ray overhead per call, ~0.2-0.5 s of work per track
FILE_ROWS = 10_000  # rows gathered into one Parquet file (not one small file per batch)
ROWS_PER_CPU = 1000  # default chunk: about 8 min of work per CPU between commits (at ~0.46 s a track, docs/scaling.md)
INSTALL_HINT = "the Ray engine needs Ray: pip install 'songfeat[ray]'"
_joined = False  # this process's Ray session was begun by `init` (so `shutdown` may end it)
_raylet_shown = False  # the cluster's error messages go to stderr (`init(verbose=True)`), else nowhere


def _ray():
    """Import ray, or raise the one-line install hint."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise SongfeatError(None, INSTALL_HINT) from None
    return ray


def init(address: str | None = None, *, verbose: bool = False, **kwargs) -> None:
    """Connect to a Ray cluster (`address="auto"`: the running one) or start a local one; quiet if already connected.

    Ray's own log lines stay off the terminal (they are in the cluster's log files) unless `verbose`: songfeat says
    what a run does, and what fails, in its own lines. While `ray.init` runs, all of stderr (file descriptor 2) is
    hidden, Ray's Python warnings with it (`_quiet_backend`; not when you set RAY_BACKEND_LOG_LEVEL yourself);
    `verbose` (the commands' --verbose) shows it."""
    ray = _ray()
    _raylet_off_stdout(verbose)  # before ray.init, which starts the thread that prints the cluster's errors
    if not verbose:
        _quiet(ray)
    if not ray.is_initialized():
        kwargs.setdefault("include_dashboard", False)
        kwargs.setdefault("log_to_driver", verbose)  # the actors' own output (songfeat reports their rows' errors)
        if not verbose:
            kwargs.setdefault("logging_level", logging.WARNING)  # ray.init sets the "ray" logger's level itself
        if address is not None:
            kwargs.pop("include_dashboard")  # only meaningful when starting a cluster
        target = _bootstrap_address(address)
        why = _unreachable(target) if target else None
        if why:  # ray.init retries an address where nothing listens for ever, warning every few seconds
            raise SongfeatError(None, f"could not join a Ray cluster at {address or target}: nothing answers at {target} ({why})")
        try:
            with contextlib.nullcontext() if verbose else _quiet_backend():
                ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise SongfeatError(None, f"could not start or join a Ray cluster (address {address or 'local'}): "
                                      f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None
        global _joined
        _joined = True
    if not verbose:
        _quiet(ray)


def _raylet_off_stdout(verbose: bool) -> None:
    """The cluster's error messages off stdout, which carries songfeat's output alone: Ray's driver prints them there
    whatever `log_to_driver` says ("(raylet) A worker died or was killed while executing a task ..." and "Task ... will
    be retried", where a file killed its worker). To stderr with `verbose`, else nowhere: songfeat names the file whose
    worker died in its own line. Ray's printer is wrapped once; a Ray without it is left as it is."""
    global _raylet_shown
    _raylet_shown = verbose
    worker = sys.modules.get("ray._private.worker")
    printer = getattr(worker, "print_to_stdstream", None)
    if printer is None or getattr(printer, "_songfeat", False):
        return

    def print_to_stdstream(data: dict, ignore_prefix: bool) -> None:
        if data.get("pid") == "raylet" and not data.get("is_err"):  # (the error listener's messages alone)
            if not _raylet_shown:
                return
            data = {**data, "is_err": True}
        printer(data, ignore_prefix)

    print_to_stdstream._songfeat = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = print_to_stdstream


def shutdown() -> None:
    """Leave the Ray session `init` began (stopping the local cluster it started) with Ctrl-C ignored meanwhile, about
    2 s. Left to Ray's exit-time shutdown, a Ctrl-C then (just after a run's last line) printed a traceback, ended the
    process by SIGSEGV instead of with the run's status, and left Ray's agents and idle actors running. A session the
    caller began itself is left alone."""
    import signal
    import threading

    global _joined
    ray = sys.modules.get("ray")  # imported by `init` whenever `_joined` is set
    if not _joined or not ray.is_initialized():
        return
    _joined = False
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        ray.shutdown()
    finally:
        if previous is not None:  # (None off the main thread, or a handler not set from Python: nothing to put back)
            signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _quiet_backend() -> Iterator[None]:
    """Ray's C++ side quiet around ray.init: RAY_BACKEND_LOG_LEVEL=fatal for the processes it starts (a local cluster's,
    and this driver's core worker, whose error lines go to the terminal: core_worker.cc's note on every actor pool of
    Ray Data's), and file descriptor 2 to /dev/null meanwhile, for the line the driver's core worker prints to say so.
    A level the user set is left alone (and then so is the terminal); the environment is as it was afterwards."""
    key = "RAY_BACKEND_LOG_LEVEL"
    if key in os.environ:
        yield
        return
    from .audio import fd2_to

    os.environ[key] = "fatal"
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        with fd2_to(devnull):
            try:
                yield
            finally:
                sys.stderr.flush()  # what Python printed meanwhile goes where fd 2 went too
    finally:
        os.close(devnull)
        os.environ.pop(key, None)


def _ray_console_handlers() -> list[logging.Handler]:
    """Ray Data's own console handlers: the stream handlers of Ray's classes on the "ray.data" logger. Others found
    there are not Ray's to quiet (under pytest the logger also held its log-capturing handlers, which were silenced
    for every later test)."""
    return [h for h in logging.getLogger("ray.data").handlers if isinstance(h, logging.StreamHandler)
            and not isinstance(h, logging.FileHandler) and type(h).__module__.split(".")[0] == "ray"]


def _quiet(ray) -> None:
    """Ray's own log lines off the driver's stderr: its INFO lines (cluster start, each Dataset's plan, and its
    progress logged line by line wherever stdout is not a terminal), and Ray Data's ERROR lines with the whole
    traceback of a failed task (~180 lines for a full disk) above the one line songfeat says it in. Ray Data still
    logs everything to its file in the cluster's session folder, and its progress bars stay where stderr is a
    terminal."""
    for name in ("ray", "ray._private.worker"):  # (Ray sets some of its modules' levels itself)
        logging.getLogger(name).setLevel(logging.WARNING)
    for handler in _ray_console_handlers():  # its file handler keeps it all
        handler.setLevel(logging.CRITICAL + 1)
    # "Token authentication is enabled for this Ray cluster", on every start: news for whoever runs the cluster (the
    # cluster songfeat starts has it on, as Ray's default), not a problem with the user's run
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)


def _bootstrap_address(address: str | None) -> str | None:
    """The host:port ray.init would connect to (RAY_ADDRESS or the last `ray start` when None), or None to start one."""
    if address is not None and address.startswith("ray://"):  # Ray Client: the server's own host:port
        return address[len("ray://"):].split("/")[0] or None
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address(address)
    except Exception:  # "auto" with nothing running, or a private API that moved: ray.init says what is wrong
        return None if address in (None, "auto", "local") else address


def _unreachable(target: str, timeout: float = 5.0) -> str | None:
    """Why a TCP connection to host:port fails (refused, no such host, timed out), or None when something answers."""
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return None  # not host:port: left to ray.init
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        return e.strerror or str(e) or type(e).__name__
    return None


def _model_arg(model: str | Path | None) -> str | None:
    """The model as workers must see it: None for the bundled one, else an absolute folder path."""
    if model in (None, "default"):
        return None
    return str(Path(model).resolve())


# ---------------------------------------------------------------------------------------------
# the worker


class _Analyzer:
    """A Ray actor: loads the model once, then analyzes batches of rows (paths on disk, or audio bytes).

    An actor that Ray restarted after its process died (a decoder crash or the OOM killer on one file; Ray then retries
    the batch it died on, for ever) analyzes each file in a worker process of its own, as the local engine does: the
    file that kills it is that row's error ("its worker process died (SIGKILL)"), and the rest of the batch is kept."""

    def __init__(self, model: str | None, path_column: str, bytes_column: str | None):
        from .analyze import get_bundle
        from .runtime import set_threads

        set_threads(1)  # as the local pool's workers: one core each (onnxruntime, and torch if loaded)
        self.model, self.path_column, self.bytes_column = model, path_column, bytes_column
        get_bundle(model)  # once per actor, and a bad model fails here, loudly, before any track
        self.model_id = model_id(model)  # every row says which model wrote it
        self.isolate = _restarted()

    def __call__(self, batch):
        from .analyze import analyze_many
        from .output import PARQUET_COLUMNS, outcome_record, records_table

        names = batch.column(self.path_column).to_pylist() if self.path_column in batch.column_names else [None] * batch.num_rows
        with tempfile.TemporaryDirectory(prefix="songfeat-") as tmp:
            if self.bytes_column:
                files = [_spill(Path(tmp) / str(i), name, data)
                         for i, (name, data) in enumerate(zip(names, batch.column(self.bytes_column).to_pylist()))]
            else:
                files = names
            records = []
            for name, file, out in zip(names, files, analyze_many(files, model=self.model, workers=1, isolate=self.isolate)):
                rec = outcome_record(file, out.features, out.error)  # identity from the file actually read
                rec["model"] = self.model_id
                if file != name:  # bytes: name the row after its source, not the temporary file
                    rec["path"] = name
                    rec["error"] = None if rec["error"] is None else rec["error"].replace(file, str(name))
                records.append(rec)
        table = records_table(records)
        for col in batch.column_names:  # the input's other columns ride along; a clash is renamed input_<name>
            if col in (self.path_column, self.bytes_column):
                continue
            table = table.append_column(f"input_{col}" if col in PARQUET_COLUMNS else col, batch.column(col))
        return table


def _restarted() -> bool:
    """Whether this Ray actor is a restart of one whose process died (False outside an actor, or if Ray cannot say)."""
    try:
        return bool(_ray().get_runtime_context().was_current_actor_reconstructed)
    except Exception:  # not in an actor (an assertion), or the GCS did not answer: analyze as usual
        return False


def _spill(folder: Path, name: str | None, data: bytes | None) -> str:
    """Write one row's audio bytes to a temporary file named like the original (so ids by file name still work)."""
    folder.mkdir()
    p = folder / _spill_name(name)
    p.write_bytes(data or b"")
    return str(p)


def _spill_name(name: str | None) -> str:
    """A file name for a row's bytes: the source's own when it is a usable one, else 'track' (with its extension).

    A name like '..', one longer than the file system allows or one with a NUL byte would make the write fail and
    take the whole batch, and the job, down with it; the row keeps its `path` either way.
    """
    base = Path(str(name)).name if name else ""
    if base in ("", ".", "..") or "\x00" in base or len(base.encode("utf-8", "surrogateescape")) > 255:
        suffix = Path(base.replace("\x00", "")).suffix
        return "track" + (suffix if 0 < len(suffix) <= 16 else "")
    return base


def _cpus(ray) -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _pool(ray, concurrency: int | tuple[int, int]):
    """An actor pool: a fixed size, or (min, max) for an autoscaling one."""
    if isinstance(concurrency, tuple):
        return ray.data.ActorPoolStrategy(min_size=concurrency[0], max_size=concurrency[1])
    return ray.data.ActorPoolStrategy(size=concurrency)


def analyze_dataset(ds, path_column: str = "path", model: str | Path | None = None, *,
                    bytes_column: str | None = None, batch_size: int = BATCH_SIZE, concurrency: int | tuple[int, int] | None = None):
    """A Ray Dataset of Spotify-shaped rows (output.parquet_schema, plus the input's other columns) from one of paths or bytes.

    `path_column` names files every worker can read; with `bytes_column` the audio comes from that
    column instead (e.g. `ray.data.read_binary_files(..., include_paths=True)`), and `path_column`,
    when present, names it. Bad files become rows with `error` set. `concurrency`: actors (one CPU
    each), a number or (min, max); default (1, cluster CPUs).
    """
    ray = _ray()
    cols = ds.schema().names
    if bytes_column is None and path_column not in cols:
        raise SongfeatError(None, f"the dataset has no {path_column!r} column (columns: {', '.join(cols)}); "
                                  "pass path_column= or bytes_column=")
    if bytes_column is not None and bytes_column not in cols:
        raise SongfeatError(None, f"the dataset has no {bytes_column!r} column (columns: {', '.join(cols)})")
    if concurrency is None:  # autoscaling, so upstream read tasks still get a CPU (a fixed full pool starves them)
        concurrency = (1, _cpus(ray))
    return ds.map_batches(_Analyzer, fn_constructor_args=(_model_arg(model), path_column, bytes_column),
                          batch_size=batch_size, batch_format="pyarrow", compute=_pool(ray, concurrency), num_cpus=1)


# ---------------------------------------------------------------------------------------------
# listing inputs


def list_inputs(inputs: list[str | Path], path_column: str = "path",
                notes: list[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Rows to analyze from files, folders (searched recursively) and CSV/Parquet tables of paths (absolute, each once),
    and the inputs refused while walking (missing, special files, ...: one '<path>: <reason>' line each). The walk's
    notes (a folder link already walked, ...: warnings, not refusals) are added to `notes` when given.

    Symlinks are not resolved: a row keeps the name it was given, which its id may come from (`<id>.mp3`), as locally.
    """
    from .audio import scan_inputs

    frames, refused = [], []
    for raw in inputs:
        p = Path(raw)
        suffix = p.suffix.lower()
        if p.is_file() and suffix in (".csv", ".parquet"):
            try:  # paths stay text: a column of names like 1 or 007 is not read as numbers
                t = pd.read_parquet(p) if suffix == ".parquet" else pd.read_csv(p, dtype={path_column: str})
            except Exception as e:
                raise SongfeatError(p, f"unreadable table of paths ({type(e).__name__}: {e})") from None
            if path_column not in t.columns:
                raise SongfeatError(p, f"no {path_column!r} column (columns: {', '.join(map(str, t.columns))})")
            keep, bad = _table_paths(p, t[path_column].tolist())
            refused.extend(bad)
            t = t.iloc[[i for i, q in enumerate(keep) if q is not None]].rename(columns={path_column: "path"})
            t["path"] = [q for q in keep if q is not None]
            frames.append(t)
        else:
            files, errors, said = scan_inputs([p])
            refused.extend(str(e) for e in errors)
            if notes is not None:
                notes.extend(said)
            names = [os.path.abspath(f) for f in files]  # a name utf8_text has to escape cannot travel as Arrow text
            refused.extend(f"{utf8_text(q)}: file name is not UTF-8, which the Ray engine cannot pass on; rename it, "
                           "or use --engine local" for q in names if utf8_text(q) != q)
            frames.append(pd.DataFrame({"path": [q for q in names if utf8_text(q) == q]}, dtype=object))
    if not frames:
        return pd.DataFrame({"path": pd.Series([], dtype=str)}), refused
    return pd.concat(frames, ignore_index=True).drop_duplicates("path", ignore_index=True), refused


def _table_paths(table: Path, values: list) -> tuple[list[str | None], list[str]]:
    """A table's path cells as absolute paths (relative ones are relative to the table), None for a refused cell,
    and one '<table>: row <n>: <reason>' line per refused cell.

    An empty cell must not turn into '<folder>/nan' or the table's own folder: it is refused by row and the other
    rows still run. A cell that is not text (a Parquet column of numbers or bytes) refuses the whole table.
    """
    base = os.path.dirname(os.path.abspath(table))
    paths: list[str | None] = []
    refused: list[str] = []
    for i, q in enumerate(values, start=1):
        reason = None
        if q is None or (isinstance(q, float) and q != q) or q is pd.NA or q == "":
            reason = "no path (an empty cell)"
        elif not isinstance(q, str):  # the whole column is of the wrong type: one line, not one per row
            raise SongfeatError(table, f"the path column holds {type(q).__name__} values, not text paths "
                                       f"(row {i}: {utf8_text(repr(q))[:80]})")
        elif "\x00" in q:
            reason = "path holds a NUL byte"
        if reason:
            refused.append(f"{table}: row {i}: {reason}")
            paths.append(None)
        else:
            paths.append(os.path.abspath(os.path.join(base, q)))  # not resolved: a link keeps its own name
    return paths, refused


# ---------------------------------------------------------------------------------------------
# the resumable job


@dataclass
class JobReport:
    """What a run did: tracks planned, skipped as already written, written now, and how many of those are errors."""

    output: Path
    planned: int = 0
    skipped: int = 0
    written: int = 0
    errors: list[dict] = field(default_factory=list)  # {path, error} written by this run
    refused: list[str] = field(default_factory=list)  # inputs that are not files to analyze (missing, special files)
    notes: list[str] = field(default_factory=list)  # what the walk of the inputs noted (warnings, not refusals)
    seconds: float = 0.0

    @property
    def tracks_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0


class _Lock:
    """An exclusive flock on output/_lock, so two drivers never write one output folder at once."""

    def __init__(self, folder: Path):
        self.path, self.fd = folder / LOCK, None

    def __enter__(self) -> "_Lock":
        import fcntl

        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:  # a read-only output folder
            raise SongfeatError(self.path, f"cannot write the lock file ({e.strerror or type(e).__name__})") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            raise SongfeatError(self.path.parent, "another run is writing this output right now") from None
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)


@contextlib.contextmanager
def _output_folder(out: Path) -> Iterator[None]:
    """Make `out` (and its missing parents) and hold its lock while the run writes it. A run that fails or is interrupted
    before it commits a part takes away what it made: the manifest, lock and staging of a folder it made, then the
    folders themselves while empty (`atomic.remove_folders`), as the local engine's -o leaves no folder it made."""
    try:  # a parent that is a file, or one that cannot be written: one line, not a traceback
        made = atomic.make_folders(out)
    except OSError as e:
        raise SongfeatError(out, f"cannot create the output folder ({e.strerror or type(e).__name__})") from None
    try:
        with _Lock(out):
            try:
                yield
            except BaseException:
                if made and not committed(out):  # a folder of ours alone, and nothing committed in it
                    shutil.rmtree(out / STAGING, ignore_errors=True)
                    for name in (MANIFEST, LOCK):  # the lock while still held: it is this run's, and goes with it
                        with contextlib.suppress(OSError):
                            (out / name).unlink()
                raise
    except BaseException:
        atomic.remove_folders(made)  # a part renamed into place keeps them (a rerun adopts it)
        raise


def _write_manifest(folder: Path, manifest: dict) -> None:
    with atomic.replacing(folder / MANIFEST, encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)


def read_manifest(folder: str | Path) -> dict | None:
    """The manifest of an output folder, or None when it has none."""
    p = Path(folder) / MANIFEST
    if not p.is_file():
        return None
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SongfeatError(p, f"unreadable manifest ({e})") from None
    if not isinstance(m, dict) or not isinstance(m.get("parts", []), list):  # a list, or parts that are not a list
        raise SongfeatError(p, "unreadable manifest (not a songfeat manifest: a JSON object with a list of parts)")
    m.setdefault("parts", [])
    return m


def committed(folder: str | Path) -> bool:
    """Whether an output folder's manifest lists a committed part (one it cannot read counts as one: it is kept)."""
    try:
        return bool((read_manifest(folder) or {}).get("parts"))
    except SongfeatError:
        return True


def _part_files(folder: Path, part: str) -> list[Path]:
    return sorted((folder / part).glob("*.parquet"))


def read_output(folder: str | Path, columns: list[str] | None = None):
    """The committed rows of an output folder as one Arrow table (only parts the manifest lists)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    m = read_manifest(folder)
    if m is None:
        raise SongfeatError(folder, f"not a songfeat Parquet output (no {MANIFEST})")
    tables = [pq.read_table(f, columns=columns) for part in m["parts"] for f in _part_files(folder, part["name"])]
    if not tables:
        from .output import parquet_schema

        schema = parquet_schema()
        return schema.empty_table() if columns is None else pa.schema([schema.field(c) for c in columns]).empty_table()
    return pa.concat_tables(tables, promote_options="default")


def _recover(folder: Path, manifest: dict) -> None:
    """Tidy after a killed run: drop half-written staging chunks, adopt parts renamed into place but not yet listed."""
    import pyarrow.parquet as pq

    shutil.rmtree(folder / STAGING, ignore_errors=True)
    listed = {p["name"] for p in manifest["parts"]}
    for d in sorted(folder.glob("part-*")):
        if d.is_dir() and d.name not in listed:  # renamed only after Ray's write returned: complete
            rows = sum(pq.ParquetFile(f).metadata.num_rows for f in _part_files(folder, d.name))
            manifest["parts"].append({"name": d.name, "rows": rows})
    _write_manifest(folder, manifest)


def _done_keys(folder: Path, manifest: dict) -> tuple[set[str], set[str]]:
    """Paths and Spotify ids already written (ids only when they name the file, as `<id>.mp3` does)."""
    from .features import is_spotify_id

    if not manifest["parts"]:
        return set(), set()
    t = read_output(folder, columns=["path", "id"])
    paths = {p for p in t.column("path").to_pylist() if p is not None}
    ids = {i for i, p in zip(t.column("id").to_pylist(), t.column("path").to_pylist())
           if is_spotify_id(i) and p is not None and Path(p).stem == i}
    return paths, ids


def _drop_done(batch, done_paths, done_ids, path_column: str):
    """Rows of a batch whose track is not yet written (by path, or by a Spotify-id file name)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    paths = batch.column(path_column)
    stems = pa.array([None if p is None else Path(p).stem for p in paths.to_pylist()], type=pa.string())
    keep = pc.and_(pc.invert(pc.is_in(paths, value_set=done_paths)), pc.invert(pc.is_in(stems, value_set=done_ids)))
    return batch.filter(pc.fill_null(keep, True))


def _chunks(df: pd.DataFrame, size: int) -> list[pd.DataFrame]:
    return [df.iloc[i:i + size] for i in range(0, len(df), size)]


def _blocks(df: pd.DataFrame, batch_size: int, actors: int | tuple[int, int]) -> list[pd.DataFrame]:
    """One block per batch (smaller when there are few rows), so every actor gets work at once."""
    n = actors[1] if isinstance(actors, tuple) else actors
    return _chunks(df, max(1, min(batch_size, -(-len(df) // max(1, n)))))


def _listed_run(ray, rows: pd.DataFrame, batch_size: int, actors: int, ordered: bool = False) -> tuple:
    """A chunk of listed rows as a Dataset of one block per batch, and its actor count: no more actors than blocks (an
    idle actor still loads the model, on a CPU the others could use, and Ray warns about it on the terminal).
    `ordered`: its rows come out in the listing's order, as the local engine writes analyze's rows (Ray Data's default
    is whichever batch ends first: another order on every run); a build files each clip by its row and needs no order,
    which would hold finished batches back behind a slow one."""
    blocks = _blocks(rows, batch_size, actors)
    ds = ray.data.from_pandas(blocks)
    if ordered:
        ds.context.execution_options.preserve_order = True  # (this Dataset's own copy of Ray Data's settings)
    return ds, max(1, min(actors, len(blocks)))


def analyze_to_parquet(inputs, output: str | Path, model: str | Path | None = None, *, path_column: str = "path",
                       bytes_column: str | None = None, batch_size: int = BATCH_SIZE, concurrency: int | None = None,
                       chunk_size: int | None = None, on_part: Callable[[dict], None] | None = None,
                       join: Callable[[], None] | None = None) -> JobReport:
    """Analyze `inputs` (files, folders, CSV/Parquet tables of paths, or a Ray Dataset) into a resumable Parquet folder.

    Tracks already written to `output` are skipped. A listed input runs in chunks of `chunk_size`
    tracks (default ROWS_PER_CPU per cluster CPU), each committed on its own; a Ray Dataset runs as
    one chunk. Ray must be initialised (see `init`), or Ray Data starts a local cluster; `join` (e.g.
    `lambda: init(address)`) is called once the inputs, the output (made, locked, its manifest read) and the model
    have been checked, so that a mistake there is said at once rather than after a cluster has started (~7 s); it is
    not called at all when every listed track is already written (the output is then only marked complete).
    """
    import importlib.util

    import pyarrow as pa

    if importlib.util.find_spec("ray") is None:  # said before any work; importing ray.data (~2.5 s) waits until needed
        raise SongfeatError(None, INSTALL_HINT)
    t0 = time.perf_counter()
    listed = isinstance(inputs, (str, Path, list, tuple))
    if listed:  # listed first: a mistyped or empty folder is one line, as locally, and leaves no output folder behind
        names = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
        notes: list[str] = []
        listing, refused = list_inputs(names, path_column, notes)
        if listing.empty and not refused:
            raise SongfeatError(None, "no audio files found in " + ", ".join(map(str, names)))
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise SongfeatError(out, "exists and is not a folder; --output for Parquet with the Ray engine is a folder")
    if out.is_dir() and read_manifest(out) is None and any(p.name != LOCK for p in out.iterdir()):
        raise SongfeatError(out, "folder is not empty and holds no songfeat output; choose an empty or new --output")
    model_arg = _model_arg(model)
    from .analyze import get_bundle

    get_bundle(model_arg)  # a folder that is not a bundle fails here, in one line, not in every actor
    with _output_folder(out):  # an output that cannot be made or written, or that another run holds: said before Ray
        fingerprint = bundle_fingerprint(model_arg)
        manifest = read_manifest(out) or {"format": FORMAT, "songfeat_version": __version__, "model": model_arg or "default",
                                          "model_sha256": fingerprint, "created": _now(), "complete": False, "parts": []}
        if manifest.get("format") != FORMAT:
            raise SongfeatError(out, f"holds {manifest.get('format')!r}, not {FORMAT} output")
        if manifest.get("model_sha256") != fingerprint:
            raise SongfeatError(out, f"holds features from another model ({manifest.get('model')}, sha256 "
                                     f"{str(manifest.get('model_sha256'))[:12]}), not {model_arg or 'default'} "
                                     f"({fingerprint[:12]}); use another --output")
        manifest["complete"] = False  # until this run ends
        _recover(out, manifest)  # (writes the manifest)
        done_paths, done_ids = _done_keys(out, manifest)
        report = JobReport(out)
        run = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]

        if listed:
            todo, report.refused, report.notes = listing, refused, notes
            report.planned = len(todo)
            stems = todo["path"].map(lambda p: Path(p).stem)
            todo = todo[~todo["path"].isin(done_paths) & ~stems.isin(done_ids)]
            report.skipped = report.planned - len(todo)
            if todo.empty:  # every track already written (a rerun of a finished job): no cluster to start (~7 s)
                _finish(out, manifest)
                report.seconds = time.perf_counter() - t0
                return report
        if join is not None:
            join()
        ray = _ray()
        if listed:
            if chunk_size is None:
                chunk_size = ROWS_PER_CPU * _cpus(ray)
            if concurrency is None:  # the listed paths are already in the object store: no read task needs a CPU
                concurrency = _cpus(ray)
            chunks = _chunks(todo, chunk_size)
            runs = (_listed_run(ray, c, batch_size, concurrency, ordered=True) for c in chunks)  # one at a time
            n_chunks, col = len(chunks), "path"
        else:  # a Ray Dataset: filtered lazily, run as one chunk
            ds, col = inputs, path_column
            if col in ds.schema().names and (done_paths or done_ids):
                ds = ds.map_batches(_drop_done, batch_format="pyarrow",
                                    fn_kwargs={"done_paths": pa.array(sorted(done_paths), pa.string()),
                                               "done_ids": pa.array(sorted(done_ids), pa.string()), "path_column": col})
            runs, n_chunks = iter([(ds, concurrency)]), 1

        for k, (ds, actors) in enumerate(runs):
            name = f"part-{run}-{k:05d}"
            staging = out / STAGING / name
            result = analyze_dataset(ds, col, model_arg, bytes_column=bytes_column, batch_size=batch_size,
                                     concurrency=actors)
            with _writing(out):  # (the Dataset is lazy: this runs the chunk's analysis too)
                # writing a few KB per track needs no CPU of its own: the actors keep every core
                result.write_parquet(str(staging), min_rows_per_file=FILE_ROWS, ray_remote_args={"num_cpus": 0})
            files = sorted(staging.glob("*.parquet")) if staging.exists() else []
            rows, errors = _count(files)
            if rows:
                with _writing(out):
                    os.replace(staging, out / name)
                    manifest["parts"].append({"name": name, "rows": rows})
                    _write_manifest(out, manifest)
            else:
                shutil.rmtree(staging, ignore_errors=True)
            report.written += rows
            report.errors.extend(errors)
            if on_part is not None:
                on_part({"part": name, "rows": rows, "errors": len(errors), "chunk": k + 1, "chunks": n_chunks})
        if report.planned == 0:
            report.planned = report.written + report.skipped
        _finish(out, manifest)
    report.seconds = time.perf_counter() - t0
    return report


def _finish(out: Path, manifest: dict) -> None:
    """Mark the output complete (with its row count) at the end of a run, and drop its staging folder."""
    manifest.update(complete=True, finished=_now(), rows=sum(p["rows"] for p in manifest["parts"]))
    with _writing(out):
        _write_manifest(out, manifest)
    shutil.rmtree(out / STAGING, ignore_errors=True)


@contextlib.contextmanager
def _writing(out: Path) -> Iterator[None]:
    """A write into the output that fails once the work is under way (a full disk, in Ray's Parquet writer or the
    manifest) as one OutputError, not Ray's task traceback: what was committed before is kept for a rerun."""
    try:
        yield
    except OSError as e:
        cause = getattr(e, "cause", None) or e  # a RayTaskError(OSError) carries the worker's own error
        errno = getattr(cause, "errno", None)
        reason = os.strerror(errno) if errno else (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        raise OutputError(out, f"cannot write ({reason})") from None


def _count(files: list[Path]) -> tuple[int, list[dict]]:
    """Rows in a chunk's files, and its error rows (path, error)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rows, errors = 0, []
    for f in files:
        t = pq.read_table(f, columns=["path", "error"])
        rows += t.num_rows
        bad = t.filter(pc.is_valid(t.column("error")))
        errors.extend(bad.to_pylist())
    return rows, errors


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# the store build: Ray computes each clip's tensor and descriptors, the driver writes them


class _ClipWorker:
    """A Ray actor running the store's per-clip step (`process_clip`) on batches of (row, path). Restarted after its
    process died, it runs each clip in a worker process of its own, as `_Analyzer` does (the local pool's way)."""

    def __init__(self, spec_dict: dict, with_descriptors: bool):
        import torch

        torch.set_num_threads(1)  # as the build's pool workers: the same tensors bit for bit
        self.spec_dict, self.with_descriptors = spec_dict, with_descriptors
        self.isolate = _restarted()

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        from .data.store import process_clip, run_pool

        paths = [str(p) for p in batch["path"]]
        if self.isolate:  # a clip that kills its process fails alone ("the decoder crashed its worker process")
            pooled: dict[int, dict] = {}
            run_pool(list(range(len(paths))), paths, self.spec_dict, self.with_descriptors, 1, pooled.__setitem__,
                     timeout=None)
            results = (pooled[k] for k in range(len(paths)))
        else:  # one at a time, in this process
            results = (process_clip(path, self.spec_dict, self.with_descriptors) for path in paths)
        out = {"row": [], "ok": [], "tensor": [], "result": []}
        for i, res in zip(batch["row"], results):
            tensor = res.pop("tensor", None)
            out["row"].append(int(i))
            out["ok"].append(bool(res["ok"]))
            out["tensor"].append(b"" if tensor is None else np.ascontiguousarray(tensor, dtype="<f4").tobytes())
            out["result"].append(json.dumps(res))
        return {k: np.asarray(v, dtype=object) if k in ("tensor", "result") else np.asarray(v) for k, v in out.items()}


def clip_runner(concurrency: int | None = None, batch_size: int = BATCH_SIZE, join: Callable[[], None] | None = None):
    """A `runner` for `build_store`: clips go through a Ray actor pool, results stream back to the driver's writer.

    `join` (e.g. `lambda: init(address)`) runs when the first clips are handed over: after the build has read its
    labels and paired them with audio, so a mistake there is said without waiting for a cluster to start."""

    def run(todo: list[int], paths: list[str], spec_dict: dict, with_descriptors: bool, workers: int, record) -> None:
        import numpy as np

        from .frontend import FrontendSpec

        if join is not None:
            join()
        ray = _ray()
        shape = FrontendSpec.from_dict(spec_dict).shape
        rows = pd.DataFrame({"row": todo, "path": [paths[i] for i in todo]})
        ds, n = _listed_run(ray, rows, batch_size, concurrency or _cpus(ray))
        ds = ds.map_batches(_ClipWorker, fn_constructor_args=(spec_dict, with_descriptors), batch_size=batch_size,
                            batch_format="numpy", compute=_pool(ray, n), num_cpus=1)
        for b in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for i, ok, tensor, result in zip(b["row"], b["ok"], b["tensor"], b["result"]):
                res = json.loads(result)
                if ok:
                    res["tensor"] = np.frombuffer(tensor, dtype="<f4").reshape(shape)
                record(int(i), res)

    return run
