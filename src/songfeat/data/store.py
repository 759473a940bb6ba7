"""The dataset store: labels joined to audio by track id, with cached front-end tensors and measured descriptors.

`build_store` decodes each clip once in a process pool, computes its front-end tensor (the first
30-s window, cut or tiled by `frontend.fit_window`) and its descriptors (over the whole file, window
by window), and the parent writes each result straight into a preallocated memory-mapped ``.npy``
at the clip's row, then appends a line to a journal. A rerun after a crash (even SIGKILL) skips the
rows the journal lists, so the finished store equals an uninterrupted build. A rerun on a finished store
tries its failed clips again (the built ones are kept as they are) and merges those built now in. Memory
stays flat: the parent holds at most a few in-flight results, never the whole array.

Layout of a finished store (see docs/store.md)::

    manifest.json        provenance, counts, front-end spec, "complete": true
    features.npy         float32 [N, C, T], row i is ids()[i]
    index.parquet        row, track_id, path, audio_seconds, content (each file's `analyze.content_id`)
    labels.parquet       normalised labels (index track_id)
    descriptors.parquet  measured features (index track_id)
    report.csv / .json   clips that failed (track_id, path, reason) and join counts
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__, atomic
from ..analyze import DEFAULT_TIMEOUT, content_id
from ..audio import (SAMPLE_RATE, SILENCE_PEAK, WINDOW_SECONDS, capture_output, check_usable, iter_windows, load_audio,
                     sound_peak)
from ..errors import AudioError, SongfeatError, SongfeatWarning, WorkFailed, counted
from ..frontend import FrontendSpec, compute, fit_window, get_spec
from . import labels as _labels

FORMAT = "songfeat-store/1"
MANIFEST = "manifest.json"
FEATURES = "features.npy"
INDEX = "index.parquet"
LABELS = "labels.parquet"
DESCRIPTORS = "descriptors.parquet"
PLAN = "plan.parquet"
REPORT_CSV = "report.csv"
REPORT_JSON = "report.json"
WORK = "work"  # holds the in-progress array and the journal until the build completes
JOURNAL = "journal.jsonl"
RETRY = "retry.json"  # in work/: this work retries the failed clips of a finished store (see _prepare_retry)
IN_FLIGHT = "in_flight"  # in work/: the clip a small build is running in-process; left behind only if the process died
BASE = "base.npy"  # in work/: a retried store's earlier features.npy, moved here while the new one is written
LOCK = ".lock"  # held (flock) by the build writing the store; the OS releases it if the build dies
COMMIT_EVERY = 8  # journal lines written (and the array flushed) together, at most this many clips apart ...
COMMIT_SECONDS = 2.0  # ... or this many seconds apart
SERIAL_MAX = 12  # this few clips are done in-process: starting a pool (~4 s to import torch) would cost more
CLIP_TIMEOUT = DEFAULT_TIMEOUT  # seconds one clip may take in a worker before it is stopped and failed (as analyze)
DESCRIPTOR_COLUMNS = ("duration_ms", "loudness", "loudness_lufs", "tempo", "tempo_confidence", "tempo_alternatives",
                      "key", "key_confidence", "mode", "mode_confidence", "time_signature", "time_signature_confidence")
EXAMPLES_IN_REPORT = 50  # unmatched ids listed by name in report.json (all are counted)


# ---------------------------------------------------------------------------------------------
# the report


@dataclass
class BuildReport:
    """What a build did: clips built, clips that failed and why, and how labels and audio matched."""

    out: Path
    planned: int = 0
    built: int = 0
    resumed: int = 0  # rows already done by an earlier run (built, or failed in the run being resumed)
    retried: int = 0  # clips that had failed in an earlier, finished build, tried again by this one
    recovered: int = 0  # of those, the clips built now
    failed: list[dict] = field(default_factory=list)  # {track_id, path, reason}
    labels_without_audio: int = 0
    audio_without_labels: int = 0
    duplicate_audio: int = 0
    label_rows: int = 0
    label_rows_dropped: dict[str, int] = field(default_factory=dict)
    label_rows_dropped_lines: list[str] = field(default_factory=list)  # LabelTable.dropped_lines: which rows, and why
    label_values_not_used: list[str] = field(default_factory=list)  # LabelTable.nulled_lines: out-of-range cells, now NaN
    columns_not_read: list[str] = field(default_factory=list)  # LabelTable.unread: a misspelt feature column, one line each
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no clip failed."""
        return not self.failed

    @property
    def processed(self) -> int:
        """Clips this run computed (resumed rows excluded): 0 for a rerun on a complete store, which has nothing to do."""
        return self.built + len(self.failed) - self.resumed

    @property
    def clips_per_second(self) -> float:
        """Throughput of this run over the clips it processed (resumed rows excluded)."""
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        """JSON-ready summary (the failures listed in full)."""
        return {"out": str(self.out), "planned": self.planned, "built": self.built, "failed": len(self.failed),
                "resumed": self.resumed, "retried": self.retried, "recovered": self.recovered,
                "labels_without_audio": self.labels_without_audio,
                "audio_without_labels": self.audio_without_labels, "duplicate_audio": self.duplicate_audio,
                "label_rows": self.label_rows, "label_rows_dropped": self.label_rows_dropped,
                "label_rows_dropped_lines": self.label_rows_dropped_lines,
                "label_values_not_used": self.label_values_not_used, "columns_not_read": self.columns_not_read,
                "seconds": round(self.seconds, 3),
                "clips_per_second": round(self.clips_per_second, 3), "failures": self.failed}


# ---------------------------------------------------------------------------------------------
# the worker: one clip in, one tensor + descriptors out


def _worker_init() -> None:
    """Pool initializer: one torch thread per worker, so `workers` processes use `workers` cores."""
    import torch

    torch.set_num_threads(1)


def process_clip(path: str, spec_dict: dict, with_descriptors: bool = True) -> dict:
    """Decode one file once: front-end of its first window, descriptors of all of it, and its content id (a hash of its
    bytes, what evaluate-audio knows a training clip by under any name); never raises for bad audio.

    What the decoder printed comes back in the result ("warnings": one line each, "log": raw text), never on stderr.
    """
    with capture_output() as cap:
        res = _process_clip(path, spec_dict, with_descriptors)
    if cap.warnings and res["ok"]:  # a failed clip: one line, its reason
        res["warnings"] = cap.warnings
    log = cap.raw(path)
    if log:
        res["log"] = log
    return res


def _refuse_foreign(out: Path) -> None:
    """Refuse an --out folder that holds anything but a build's lock and no store: a build never writes into it."""
    if any(p.name != LOCK for p in out.iterdir()):
        raise SongfeatError(out, "folder is not empty and holds no songfeat store; choose an empty or new --out")


def _stamp(path: str) -> tuple[int, int, int] | None:
    """A file's inode, size and mtime (None if it cannot be read: decoding it says why): the same before and after it
    was decoded and hashed, so that its content id names the bytes its tensor and descriptors were made from (a sync
    tool may rename a new version into place)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _process_clip(path: str, spec_dict: dict, with_descriptors: bool) -> dict:
    spec = FrontendSpec.from_dict(spec_dict)
    try:
        same_grid = spec.sample_rate == SAMPLE_RATE and spec.window_seconds == WINDOW_SECONDS
        first: np.ndarray | None = None
        evidence = []
        total, peak = 0, 0.0
        if with_descriptors:
            from ..descriptors import combine, window_evidence
        read_as = _stamp(path)
        for w in iter_windows(path):
            if first is None:
                first = w
            total += w.size
            peak = max(peak, sound_peak(w))  # as analyze: a constant offset is not sound
            if with_descriptors:
                evidence.append(window_evidence(w, SAMPLE_RATE))
        check_usable(path, total, peak)
        _warn_late_start(path, first, spec.window_seconds)
        if not same_grid:  # a front-end on another rate or window length decodes its own first window; what that
            with capture_output():  # second decode says, the first said already (damage read past was warned twice)
                first = load_audio(path, sr=spec.sample_rate, max_seconds=spec.window_seconds)
        tensor = compute(spec, fit_window(first, spec))[0].numpy().astype(np.float32, copy=False)
        if tensor.shape != spec.shape:
            raise AudioError(path, f"front-end gave shape {tuple(tensor.shape)}, expected {spec.shape}")
        if not np.all(np.isfinite(tensor)):
            raise AudioError(path, "front-end produced NaN or infinite values")
        desc = combine(evidence).to_dict() if with_descriptors else {"duration_ms": int(round(1000.0 * total / SAMPLE_RATE))}
        content = content_id(path)
        if _stamp(path) != read_as:  # the content id would name other bytes than the ones decoded
            raise AudioError(path, "changed while it was read (replaced or written to); build again to read it anew")
        return {"ok": True, "tensor": tensor, "audio_seconds": total / SAMPLE_RATE, "descriptors": desc,
                "content": content}
    except AudioError as e:
        return {"ok": False, "reason": e.reason}
    except Exception as e:  # a decoder or numeric failure on one file must not stop the build
        return {"ok": False, "reason": f"failed to process ({type(e).__name__}: {str(e).strip()[:200] or 'no message'})"}


def sound_start(y: np.ndarray, sr: int = SAMPLE_RATE) -> float | None:
    """Seconds into `y` where its first second holding sound (a `sound_peak` above `SILENCE_DBFS`) begins; None if
    it holds none: how long a clip's silent intro lasts, in whole seconds."""
    for start in range(0, y.size, sr):
        if sound_peak(y[start:start + sr], edge=0) > SILENCE_PEAK:
            return start / sr
    return None


def _warn_late_start(path: str, first: np.ndarray, window_seconds: float) -> None:
    """Warn when the window the store keeps for a clip's front-end (its first) is silent for half of it or more: the
    cached tensor then describes silence, not the song (a long silent intro). The clip is kept as it is: `analyze`
    too reads every window from the start, silent ones included."""
    start = sound_start(first[:int(round(window_seconds * SAMPLE_RATE))])
    if start is None or start >= window_seconds / 2:
        silent, what = ("is silent", "silence") if start is None else (f"is silent up to {start:.0f} s", "mostly silence")
        warnings.warn(f"{path}: its first {window_seconds:g} s, the window whose front-end the store keeps, {silent} (a "
                      f"long silent intro?); its row describes {what}, not the song",
                      SongfeatWarning, stacklevel=2)


# ---------------------------------------------------------------------------------------------
# planning: which clips, in which order


def _absolute(p: Path) -> str:
    """The path with links resolved, or just made absolute when it cannot be (a symlink loop)."""
    try:
        return str(p.resolve())
    except (OSError, RuntimeError):
        return os.path.abspath(p)


def _no_rows_reason(table: _labels.LabelTable) -> str:
    """Why a label table left nothing to build: no data rows, or every row dropped (the first few reasons named)."""
    if table.dropped.empty:
        return "no label rows (the file holds a header and nothing else)"
    lines = table.dropped_lines()
    shown = "; ".join(line.removeprefix(f"{table.source}: ") for line in lines[:3])
    return f"every label row was dropped ({len(lines)}: {shown}{' ...' if len(lines) > 3 else ''})"


def _labels_digest(table: _labels.LabelTable, plan_ids: list[str]) -> str:
    """SHA-256 of the normalised labels of the planned clips: a rerun with edited labels must not keep stale ones."""
    import hashlib

    frame = table.frame.drop_duplicates("track_id").set_index("track_id")
    cols = [c for c in _labels.NORMALISED_COLUMNS if c in frame.columns and c != "track_id"]
    lab = frame.reindex(plan_ids)[cols]
    return hashlib.sha256(lab.to_csv(float_format="%.17g").encode("utf-8")).hexdigest()


def _as_table(labels: str | Path | _labels.LabelTable | pd.DataFrame) -> _labels.LabelTable:
    """Accept a label file, a LabelTable, or an already normalised DataFrame with a track_id column."""
    if isinstance(labels, _labels.LabelTable):
        return labels
    if isinstance(labels, pd.DataFrame):
        frame = labels.reset_index() if "track_id" not in labels.columns else labels
        return _labels.LabelTable(frame=frame.reset_index(drop=True), dropped=pd.DataFrame(columns=["row", "track_id", "reason"]),
                                  source="<DataFrame>")
    return _labels.read_labels(labels)


# ---------------------------------------------------------------------------------------------
# the journal


def _scan_journal(path: Path):
    """Yield the journal's records in order; a torn last line (killed mid-write) is ignored, so that clip is redone."""
    if not path.exists():
        return
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


class _RowFile:
    """A preallocated float32 .npy opened for row writes with pwrite: nothing is mapped, so the parent's memory stays flat.

    (Writing through an np.memmap would leave every written page resident in the process.)
    """

    def __init__(self, path: Path, rows: int, shape: tuple[int, int]):
        if not path.exists():
            tmp = path.with_name(f".{path.name}.tmp")
            np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(rows, *shape)).flush()  # sparse zeros
            os.replace(tmp, path)
        self.offset, got = _npy_layout(path)
        if got != (rows, *shape):
            raise SongfeatError(path, f"in-progress array has shape {got}, expected {(rows, *shape)}; delete the store folder and rebuild")
        self.row_bytes = int(np.prod(shape)) * 4
        self.fd = os.open(path, os.O_RDWR)

    def write(self, row: int, tensor: np.ndarray) -> None:
        data = np.ascontiguousarray(tensor, dtype="<f4").tobytes()
        os.pwrite(self.fd, data, self.offset + row * self.row_bytes)

    def read(self, row: int) -> bytes:
        return os.pread(self.fd, self.row_bytes, self.offset + row * self.row_bytes)

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


def _npy_layout(path: Path) -> tuple[int, tuple[int, ...]]:
    """Byte offset of the data and the shape of a little-endian float32, C-order .npy file."""
    m = np.load(path, mmap_mode="r")  # parses the header; no data page is touched
    try:
        if m.dtype != np.dtype("<f4") or not m.flags.c_contiguous:
            raise SongfeatError(path, f"unexpected array layout ({m.dtype}, C-contiguous={m.flags.c_contiguous})")
        return int(m.offset), tuple(m.shape)
    finally:
        del m


def _repair_torn_tail(path: Path) -> None:
    """Cut a torn last line (a write killed part-way) so the next appended line starts on a line of its own."""
    if not path.exists():
        return
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        pos = size
        while pos > 0:  # walk back block by block to the last newline
            step = min(65536, pos)
            f.seek(pos - step)
            block = f.read(step)
            k = block.rfind(b"\n")
            if k >= 0:
                f.truncate(pos - step + k + 1)
                return
            pos -= step
        f.truncate(0)


class _Journal:
    """Append-only record of finished rows, committed in small groups: tensors flushed first, then their lines in one write.

    Committing every few clips (not every clip) keeps msync/fsync off the hot path; a crash loses
    at most the clips of the uncommitted group and those in flight, which a rerun redoes.
    """

    def __init__(self, path: Path, arr: "_RowFile | None", every: int = COMMIT_EVERY, seconds: float = COMMIT_SECONDS):
        _repair_torn_tail(path)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.arr, self.every, self.seconds = arr, every, seconds
        self.pending: list[bytes] = []
        self.last = time.monotonic()

    def add(self, rec: dict) -> None:
        self.pending.append((json.dumps(rec, separators=(",", ":")) + "\n").encode())
        if len(self.pending) >= self.every or time.monotonic() - self.last >= self.seconds:
            self.commit()

    def commit(self) -> None:
        if self.pending:
            if self.arr is not None:
                self.arr.sync()  # the rows' tensors reach the disk before the lines that vouch for them
            os.write(self.fd, b"".join(self.pending))
            os.fsync(self.fd)
            self.pending.clear()
        self.last = time.monotonic()

    def close(self) -> None:
        self.commit()
        os.close(self.fd)


# ---------------------------------------------------------------------------------------------
# build


class _lock:
    """An exclusive, non-blocking flock on out/.lock, so two builds never write one store at once."""

    def __init__(self, out: Path):
        self.path = out / LOCK
        self.fd: int | None = None

    def __enter__(self) -> "_lock":
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:  # a read-only --out: refused before any work, as one it cannot create
            raise SongfeatError(self.path.parent, f"cannot write into the store folder ({e.strerror or e})") from None
        try:
            import fcntl

            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - Windows: no lock
            pass
        except OSError:
            os.close(self.fd)
            raise SongfeatError(self.path.parent, "another build is writing this store right now; wait for it or use another --out") from None
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)


def _progress(enabled: bool, total: int, completed: int):
    """Progress on stderr (`progress.bar`: a bar on a terminal, plain lines now and then elsewhere), or None when
    disabled."""
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from ..progress import bar as new_bar

    bar = new_bar(TextColumn("building store"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                  transient=False, auto_refresh=False)  # refreshed by the builder: a refresh thread could write into a decoder capture
    bar.start()
    bar.add_task("build", total=total, completed=completed)
    return bar


def build_store(labels: str | Path | _labels.LabelTable | pd.DataFrame, audio_dir: str | Path, out: str | Path, *,
                frontend: str | FrontendSpec = "mfcc", workers: int = 2, progress: bool = True, limit: int | None = None,
                descriptors: bool = True, timeout: float | None = CLIP_TIMEOUT,
                on_message: Callable[[str], None] | None = None, verbose: bool = False, runner=None) -> BuildReport:
    """Build (or resume building) a store at `out` from a label table and a folder of audio named by track id.

    Bad audio is listed in report.csv/report.json and never stops the build. Rerunning on the same
    `out` with the same inputs continues an interrupted build, and on a finished one tries the clips that
    failed again (`retried`, `recovered` in the report). Inputs it cannot use (labels, audio folder, an `out` of
    different inputs or not writable, no clip pairing with a label) raise SongfeatError before any clip is computed; a
    store that cannot be finished once they were raises WorkFailed (README, "Exit status": 2 and 1).
    A build of more than SERIAL_MAX clips runs them in worker processes (its resumes too), where a clip taking over `timeout` seconds is
    stopped and failed. Nothing is printed: label columns not read (`LabelTable.unread`, before the work) and decoder
    warnings ('warning: <file>: ...'), and with `verbose` the decoders' raw lines, go to `on_message` as they happen.
    `runner` replaces the worker processes (called like `run_pool` without `timeout`, e.g.
    `distributed.clip_runner()`); it has no per-clip time limit.
    """
    t0 = time.perf_counter()
    out = Path(out)
    audio_dir = Path(audio_dir)
    spec = get_spec(frontend) if isinstance(frontend, str) else frontend
    frontend_name = frontend if isinstance(frontend, str) else spec.kind
    if not audio_dir.is_dir():
        raise SongfeatError(audio_dir, "audio folder not found" if not audio_dir.exists() else "not a folder")
    if out.exists() and not out.is_dir():
        raise SongfeatError(out, "exists and is not a folder")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    table = _as_table(labels)
    if on_message:  # before the work, not after it: a misspelt 'valance' column loses every valence label
        for line in table.unread:
            on_message(f"warning: {line}")
    frame = table.frame
    if len(frame) == 0:
        raise SongfeatError(table.source, _no_rows_reason(table))
    ids = list(dict.fromkeys(frame["track_id"].astype(str)))
    id_kind = frame.attrs.get("id_kind", "spotify")
    found, unlabelled, duplicates = _labels.index_audio(audio_dir, set(ids), id_kind, on_message)
    plan_ids = sorted(found)  # build order: by track id, independent of listing order
    if limit is not None:
        plan_ids = plan_ids[:limit]
    plan = pd.DataFrame({"row": np.arange(len(plan_ids), dtype=np.int64), "track_id": plan_ids,
                         "path": [_absolute(found[t]) for t in plan_ids]})
    labels_without_audio = [t for t in ids if t not in found]
    if not found:
        example = f"; e.g. {unlabelled[0].name} vs label id {_labels.short_id(ids[0])}" if unlabelled and ids else ""
        raise SongfeatError(audio_dir, f"no audio file matches a labelled track id ({counted(len(ids), 'label row')}, "
                                       f"{counted(len(unlabelled), 'audio file')}{example}); name files <track_id>.<ext>")

    manifest = {
        "format": FORMAT, "songfeat_version": __version__, "complete": False,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "labels": {**table.summary(), "source": table.source},
        "audio_dir": str(audio_dir.resolve()), "frontend_name": frontend_name, "frontend": spec.to_dict(),
        "descriptors": bool(descriptors), "planned": len(plan), "limit": limit,
        "labels_digest": _labels_digest(table, plan_ids),
        "window": f"first {spec.window_seconds:g} s of each clip (longer cut, shorter tiled)",
    }
    # (a .lock is a build's: one starting now has made work/ but not yet its manifest, and the lock refuses this run in
    # its own words below; a second build at once was told its store 'holds no songfeat store')
    if out.is_dir() and not (out / MANIFEST).exists() and not (out / LOCK).exists():
        _refuse_foreign(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # read-only place, a file in the way, no such device
        raise SongfeatError(out, f"cannot create the store folder ({e.strerror or e})") from None
    with _lock(out):
        work = out / WORK
        old = _read_manifest(out)
        retrying = False  # this run tries again the clips that failed in a finished build
        if old is not None:
            _check_same_inputs(out, old, manifest, plan)
            manifest["created"] = old.get("created", manifest["created"])
            retrying = (work / RETRY).exists()  # a retry interrupted before it finished (the store may be complete)
            if old.get("complete") and (out / INDEX).exists() and not retrying:
                shutil.rmtree(work, ignore_errors=True)  # left behind if the last run died while tidying up
                report = _report_from_disk(out)
                if not report.failed:
                    report.seconds = time.perf_counter() - t0
                    return report
                _prepare_retry(out, plan, spec)  # as `analyze --resume`: what failed is tried again
                retrying = True
        else:
            _refuse_foreign(out)
            work.mkdir(exist_ok=True)
            with atomic.temp_beside(out / PLAN) as tmp:
                plan.to_parquet(tmp)
            with atomic.replacing(out / MANIFEST, encoding="utf-8") as f:
                json.dump(manifest, f, indent=2)

        work.mkdir(exist_ok=True)
        arr_path = work / FEATURES
        state = np.full(len(plan), -1, dtype=np.int8)  # -1 to do, 0 failed, 1 built: one byte per clip
        for rec in _scan_journal(work / JOURNAL):
            state[int(rec["row"])] = 1 if rec.get("ok") else 0
        final_exists = (out / FEATURES).exists() and not retrying  # a retry's features.npy is the earlier store's
        arr = None if final_exists else _RowFile(arr_path, len(plan), spec.shape)
        resumed = int((state >= 0).sum())
        todo = np.flatnonzero(state < 0).tolist() if not final_exists else []
        paths = plan["path"].tolist()
        tids = plan["track_id"].tolist()

        journal = _Journal(work / JOURNAL, arr)
        bar = _progress(progress, len(plan), resumed)
        spec_dict = spec.to_dict()

        def record(i: int, res: dict) -> None:
            """Write one finished clip: tensor into its row, then its journal line (committed in groups)."""
            if res["ok"]:
                arr.write(i, res["tensor"])
                rec = {"row": i, "track_id": tids[i], "ok": True, "audio_seconds": res["audio_seconds"], "descriptors": res["descriptors"],
                       "content": res.get("content")}
            else:
                rec = {"row": i, "track_id": tids[i], "ok": False, "reason": res["reason"]}
            if res.get("warnings"):
                rec["warnings"] = res["warnings"]
            if on_message:
                for w in res.get("warnings", ()):
                    on_message(f"warning: {w}")
                if verbose and res.get("log"):
                    for line in res["log"].splitlines():
                        on_message(line)
            journal.add(rec)
            state[i] = 1 if res["ok"] else 0
            if bar is not None:
                bar.advance(bar.task_ids[0])
                bar.refresh()

        try:
            # a pooled build's resume or retry goes back to worker processes, however few clips are left: one that
            # crashed or stalled its worker before (or was in flight when the build was killed) would take down or
            # hang this process, which has no time limit. So does a small build's rerun after it died in-process on a
            # clip (IN_FLIGHT left behind): a clip that kills its process killed every rerun too, for good
            flight = work / IN_FLIGHT
            if todo and runner is None and len(plan) <= SERIAL_MAX and not flight.exists():
                from ..runtime import torch_threads

                try:
                    with torch_threads(1):  # as in pool workers: same reduction order, so the same tensors bit for bit
                        for i in todo:
                            flight.write_text(paths[i], encoding="utf-8")
                            record(i, process_clip(paths[i], spec_dict, descriptors))
                finally:  # finished, failed or interrupted: only a process that died leaves it
                    flight.unlink(missing_ok=True)
            elif todo:
                if runner is not None:
                    runner(todo, paths, spec_dict, descriptors, workers, record)
                else:
                    run_pool(todo, paths, spec_dict, descriptors, workers, record, timeout=timeout)
        finally:
            journal.close()
            if bar is not None:
                bar.stop()
            if arr is not None:
                arr.close()

        try:
            report = _finalise(out, table, plan, manifest, labels_without_audio, unlabelled, duplicates, spec,
                               resumed=resumed, retrying=retrying)
        except SongfeatError as e:  # the clips ran: a store that cannot be finished now is work that failed, not a refusal
            raise WorkFailed(e.path, e.reason) from None
        report.seconds = time.perf_counter() - t0
        return report


def _call(job: tuple) -> dict:
    """Worker side of run_pool: one clip through `fn`, its time limit first scaled to its length (a long file may take longer)."""
    fn, path, spec_dict, with_descriptors, timeout = job
    if timeout:
        from ..analyze import ask_time_for

        try:
            ask_time_for(path, timeout)
        except SongfeatError:
            pass  # `fn` reports the unreadable file itself
    return fn(path, spec_dict, with_descriptors)


def run_pool(todo: list[int], paths: list[str], spec_dict: dict, with_descriptors: bool, workers: int, record,
             fn=None, timeout: float | None = CLIP_TIMEOUT) -> None:
    """Run clips in worker processes (songfeat.workers), one at a time each; a clip that kills or stalls its worker fails alone.

    A worker that dies (a decoder segfault, the OOM killer) or overruns `timeout` is replaced and only its clip is
    failed; the build carries on. The one per-clip pool: a build's, and a restarted Ray actor's (`distributed`).
    """
    from ..workers import run_jobs, with_output

    fn = fn or process_clip
    jobs = [(fn, paths[i], spec_dict, with_descriptors, timeout) for i in todo]
    for r in run_jobs(_call, jobs, workers=max(1, workers), timeout=timeout, init=_worker_init,
                      preload=("songfeat.data.store", "songfeat.descriptors")):
        i = todo[r.index]
        if r.ok:
            res = r.value
        elif r.status == "crashed":
            res = {"ok": False, "reason": "the decoder crashed its worker process"}
        elif r.status == "timeout":
            res = {"ok": False, "reason": r.value}
        else:
            res = {"ok": False, "reason": f"failed to process ({r.value[:200]})"}
        if r.log.strip():
            res["log"] = with_output(res.get("log"), paths[i], r.log)
        record(i, res)


def _read_manifest(out: Path) -> dict | None:
    """The manifest of a store folder, or None when there is none."""
    p = out / MANIFEST
    if not p.exists():
        return None
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise SongfeatError(p, f"unreadable store manifest ({e})") from None
    if not isinstance(m, dict):
        raise SongfeatError(p, f"unreadable store manifest (a JSON {type(m).__name__}, not an object)")
    return m


def finished_clips(out: Path) -> tuple[int, int] | None:
    """(clips finished, clips planned) of the store being built at `out`, or None when none was begun (no manifest):
    what an interrupted build keeps. Finished clips are its journal's (built or failed: a rerun computes neither again)."""
    try:
        manifest = _read_manifest(out)
    except SongfeatError:  # a damaged one: the store was begun, and a rerun says what is wrong with it
        return 0, 0
    if manifest is None:
        return None
    planned = int(manifest.get("planned") or 0)
    if not (out / WORK / JOURNAL).exists():  # none finished yet, or a complete store with nothing left to retry
        return (planned if manifest.get("complete") else 0), planned
    return len({rec.get("row") for rec in _scan_journal(out / WORK / JOURNAL)}), planned


def _read_parquet(path: Path) -> pd.DataFrame:
    """One of a store's Parquet tables; SongfeatError naming it when it is missing or damaged."""
    try:
        return pd.read_parquet(path)
    except FileNotFoundError:
        raise SongfeatError(path, "missing from the store; rebuild the store") from None
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise SongfeatError(path, f"damaged store table ({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}); "
                                  "rebuild the store") from None


def _frontend_change(old: dict, new: dict) -> str:
    """How two manifests' front-ends differ, in words: their names, or the settings of one front-end (a store of the
    same name made by an older songfeat, e.g. a musicnn store from before its windows were levelled)."""
    if old.get("frontend_name") != new["frontend_name"]:
        return f"front-end {old.get('frontend_name')} vs {new['frontend_name']}"
    was, now = old.get("frontend") or {}, new["frontend"]
    moved = [f"{k} {was.get(k)} before, {now.get(k)} now" for k in sorted(set(was) | set(now)) if was.get(k) != now.get(k)]
    return f"{new['frontend_name']} front-end settings ({', '.join(moved)})"


def _check_same_inputs(out: Path, old: dict, new: dict, plan: pd.DataFrame) -> None:
    """Refuse to resume a store that was started from different inputs."""
    if old.get("format") != FORMAT:
        raise SongfeatError(out, f"holds {old.get('format')!r}, not a {FORMAT} store")
    diffs = []
    if old.get("frontend") != new["frontend"]:
        diffs.append(_frontend_change(old, new))
    if bool(old.get("descriptors", True)) != new["descriptors"]:
        diffs.append("descriptors on/off")
    if old.get("limit") != new.get("limit"):
        diffs.append(f"--limit {old.get('limit')} before, {new.get('limit')} now")
    plan_path = out / PLAN
    same_clips = False
    if plan_path.exists():
        old_plan = _read_parquet(plan_path)
        same_clips = (old_plan["track_id"].tolist() == plan["track_id"].tolist()
                      and old_plan["path"].tolist() == plan["path"].tolist())
        if not same_clips:
            diffs.append(f"clips ({len(old_plan)} planned before, {len(plan)} now)")
    else:
        diffs.append("no plan.parquet")
    # the digest covers the planned clips' labels, so other clips change it too: only said of the same clips
    if same_clips and old.get("labels_digest") not in (None, new["labels_digest"]):  # older stores: not checked
        diffs.append("label values (the label file was edited or replaced)")
    if diffs:
        raise SongfeatError(out, f"already holds a build of different inputs ({'; '.join(diffs)}); use another --out or delete it")


def _finalise(out: Path, table: _labels.LabelTable, plan: pd.DataFrame, manifest: dict,
              labels_without_audio: list[str], unlabelled: list[Path], duplicates: int, spec: FrontendSpec,
              resumed: int = 0, retrying: bool = False) -> BuildReport:
    """Compact the finished rows into features.npy and write index, labels, descriptors, report and manifest atomically.

    `retrying` (work/ made by `_prepare_retry`): the earlier store's clips are merged with the retried ones built now;
    when none was, only report.csv/report.json are written again (the reasons may have changed), the rest is left alone.
    """
    n = len(plan)
    state = np.full(n, -1, dtype=np.int8)
    base_row = np.full(n, -1, dtype=np.int64)  # a retry: the clip's row in the earlier store's features.npy
    seconds = np.full(n, np.nan)
    desc_cols = {c: np.full(n, np.nan) for c in DESCRIPTOR_COLUMNS if c != "tempo_alternatives"}
    alternatives: dict[int, list] = {}
    reasons: dict[int, str] = {}
    warned: dict[int, list[str]] = {}
    content: dict[int, str | None] = {}
    for rec in _scan_journal(out / WORK / JOURNAL):  # streamed: a few numbers per clip, never the records
        i = int(rec["row"])
        state[i] = 1 if rec.get("ok") else 0
        if rec.get("warnings"):
            warned[i] = rec["warnings"]
        if rec.get("ok"):
            reasons.pop(i, None)
            base_row[i] = rec.get("base", -1)
            seconds[i] = rec["audio_seconds"]
            content[i] = rec.get("content")  # None in a line from an older songfeat (its build or store)
            d = rec.get("descriptors") or {}
            for c, col in desc_cols.items():
                v = d.get(c)
                col[i] = np.nan if v is None else float(v)
            if d.get("tempo_alternatives"):
                alternatives[i] = [float(x) for x in d["tempo_alternatives"]]
        else:
            reasons[i] = rec.get("reason", "unknown")
    good = np.flatnonzero(state == 1).tolist()
    bad = np.flatnonzero(state == 0).tolist()
    missing = np.flatnonzero(state < 0)
    if missing.size:  # cannot happen unless the pool stopped early; better loud than a silent hole
        raise SongfeatError(out, f"{counted(int(missing.size), 'clip was', 'clips were')} not processed; rerun the build to finish them")
    work = out / WORK
    final = out / FEATURES
    earlier = int((base_row >= 0).sum())
    retried, recovered = (n - earlier, len(good) - earlier) if retrying else (0, 0)
    changed = not retrying or recovered > 0
    if retrying and recovered:
        _merge_retried(out, manifest, good, base_row, spec)
    elif not retrying and not final.exists():
        src = work / FEATURES
        if len(good) == len(plan):
            os.replace(src, final)  # nothing to drop: the work array is the store
        else:
            a = _RowFile(src, len(plan), spec.shape)
            try:
                _write_rows(final, spec, [(a, i) for i in good])
            finally:
                a.close()

    ids = [plan["track_id"].iat[i] for i in good]
    index = pd.DataFrame({"row": np.arange(len(good), dtype=np.int64), "track_id": ids,
                          "path": [plan["path"].iat[i] for i in good],
                          "audio_seconds": seconds[good]})
    if all(content.get(i) for i in good):  # all or none: a store with some clips' hashes would match the rest by id unsaid
        index["content"] = [content[i] for i in good]
    frame = table.frame.drop_duplicates("track_id").set_index("track_id")
    lab = frame.reindex(ids)
    lab.index.name = "track_id"
    lab = lab.drop(columns=[c for c in lab.columns if lab[c].isna().all() and c not in _labels.NORMALISED_COLUMNS])
    desc = pd.DataFrame({c: col[good] for c, col in desc_cols.items()}, index=pd.Index(ids, name="track_id"))
    desc["tempo_alternatives"] = [alternatives.get(i, []) for i in good]
    desc = desc[list(DESCRIPTOR_COLUMNS)]

    failures = [{"track_id": plan["track_id"].iat[i], "path": plan["path"].iat[i], "reason": reasons[i]} for i in bad]
    report = BuildReport(out=out, planned=len(plan), built=len(good), resumed=resumed, retried=retried,
                         recovered=recovered, failed=failures,
                         labels_without_audio=len(labels_without_audio), audio_without_labels=len(unlabelled),
                         duplicate_audio=duplicates, label_rows=len(table.frame), label_rows_dropped=table.drop_counts(),
                         label_rows_dropped_lines=table.dropped_lines(), label_values_not_used=table.nulled_lines(),
                         columns_not_read=table.unread)
    rep = report.to_dict()
    rep.pop("seconds"), rep.pop("clips_per_second")
    rep["labels_without_audio_examples"] = labels_without_audio[:EXAMPLES_IN_REPORT]
    rep["audio_without_labels_examples"] = [str(p) for p in unlabelled[:EXAMPLES_IN_REPORT]]
    rep["warnings"] = [{"track_id": plan["track_id"].iat[i], "path": plan["path"].iat[i], "warnings": w}
                       for i, w in sorted(warned.items())]  # e.g. decoder errors skipped in a clip that was built

    for df, name in ((index, INDEX), (lab, LABELS), (desc, DESCRIPTORS)) if changed else ():
        with atomic.temp_beside(out / name) as tmp:
            df.to_parquet(tmp)
    with atomic.temp_beside(out / REPORT_CSV) as tmp:
        pd.DataFrame(failures, columns=["track_id", "path", "reason"]).to_csv(tmp, index=False)
    with atomic.replacing(out / REPORT_JSON, encoding="utf-8") as f:
        json.dump(rep, f, indent=2)
    if changed:  # a retry that built nothing leaves the manifest as it was: complete, the same counts
        manifest = {**manifest, "complete": True, "built": len(good), "failed": len(bad),
                    "labels_without_audio": len(labels_without_audio), "audio_without_labels": len(unlabelled),
                    "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "shape": [len(good), *spec.shape]}
        with atomic.replacing(out / MANIFEST, encoding="utf-8") as f:
            json.dump(manifest, f, indent=2)
    (work / RETRY).unlink(missing_ok=True)  # first: a work/ left without it by a crash here is only removed by a rerun
    shutil.rmtree(work, ignore_errors=True)
    return report


def _merge_retried(out: Path, manifest: dict, good: list[int], base_row: np.ndarray, spec: FrontendSpec) -> None:
    """Write features.npy anew, in plan order, from the earlier store's rows and the retried clips built now.

    The manifest says "complete": false first (the files that follow are replaced one by one), and the earlier array
    is moved to work/base.npy and read from there: a crash at any point is finished by the next run, from the same
    sources, with the same result.
    """
    with atomic.replacing(out / MANIFEST, encoding="utf-8") as f:
        json.dump({**manifest, "complete": False}, f, indent=2)
    work = out / WORK
    base = work / BASE
    if not base.exists():
        os.replace(out / FEATURES, base)
    earlier = any(base_row[i] >= 0 for i in good)
    old = _RowFile(base, _npy_layout(base)[1][0], spec.shape) if earlier else None  # a (0, C, T) array cannot be mapped
    new = _RowFile(work / FEATURES, len(base_row), spec.shape)
    try:
        _write_rows(out / FEATURES, spec, [(old, int(base_row[i])) if base_row[i] >= 0 else (new, i) for i in good])
    finally:
        for f in (old, new):
            if f is not None:
                f.close()


def _write_rows(dest: Path, spec: FrontendSpec, rows: list[tuple["_RowFile", int]]) -> None:
    """Write `dest` (a .npy of len(rows) front-end rows) from (source file, row) pairs in order, via a temporary file
    beside it renamed into place; row by row, so memory stays flat."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    b = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(rows), *spec.shape))
    del b
    b = _RowFile(tmp, len(rows), spec.shape)
    try:
        for k, (src, i) in enumerate(rows):
            os.pwrite(b.fd, src.read(i), b.offset + k * b.row_bytes)
        b.sync()
    finally:
        b.close()
    os.replace(tmp, dest)


def _plain(v: object) -> object:
    """A descriptor value read back from Parquet as JSON wants it: None for NaN, a list of floats for an array."""
    if isinstance(v, (list, tuple, np.ndarray)):
        return [float(x) for x in v]
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    return float(v)


def _prepare_retry(out: Path, plan: pd.DataFrame, spec: FrontendSpec) -> None:
    """Turn a finished store with failed clips into work that retries them: each built clip becomes a journal line.

    A line holds what the store has for its clip (audio_seconds, descriptors, content id, warnings) and "base", its row in
    features.npy, so the failed clips are what is left to do and `_finalise` merges both (`_merge_retried`); a built
    clip is never computed again. Made in out/.work.tmp and renamed onto out/work, so a crash leaves no work or all of
    it. The store stays complete and readable, as it was, until a retried clip is built and merged in.
    """
    index = _read_parquet(out / INDEX)
    tids = index["track_id"].astype(str).tolist()
    rows = _npy_layout(out / FEATURES)[1] if tids else (0, *spec.shape)
    if rows != (len(tids), *spec.shape):
        raise SongfeatError(out / FEATURES, f"shape {rows} does not match the index ({len(tids)} clips, {spec.shape}); "
                                            "delete the store folder and rebuild")
    desc = _read_parquet(out / DESCRIPTORS).reindex(tids)
    cols = {c: desc[c].tolist() for c in desc.columns}
    secs = index["audio_seconds"].tolist()
    hashes = index["content"].tolist() if "content" in index.columns else [None] * len(tids)  # none in an older store
    rep = json.loads((out / REPORT_JSON).read_text(encoding="utf-8"))
    warned = {w["track_id"]: w["warnings"] for w in rep.get("warnings", [])}
    row_of = {t: i for i, t in enumerate(plan["track_id"].astype(str))}
    tmp = out / f".{WORK}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    with open(tmp / JOURNAL, "wb") as f:
        for k, tid in enumerate(tids):
            if tid not in row_of:
                raise SongfeatError(out / INDEX, f"lists {_labels.short_id(tid)}, which plan.parquet does not; delete the "
                                                 "store folder and rebuild")
            rec = {"row": row_of[tid], "track_id": tid, "ok": True, "audio_seconds": float(secs[k]),
                   "descriptors": {c: _plain(v[k]) for c, v in cols.items()}, "content": hashes[k], "base": k}
            if warned.get(tid):
                rec["warnings"] = warned[tid]
            f.write((json.dumps(rec, separators=(",", ":")) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())
    (tmp / RETRY).write_text(json.dumps({"failed_before": len(plan) - len(tids)}) + "\n", encoding="utf-8")
    os.replace(tmp, out / WORK)


def _report_from_disk(out: Path) -> BuildReport:
    """The report of an already complete store (a rerun with nothing left to do)."""
    rep = json.loads((out / REPORT_JSON).read_text(encoding="utf-8"))
    return BuildReport(out=out, planned=rep["planned"], built=rep["built"], resumed=rep["planned"], failed=rep["failures"],
                       labels_without_audio=rep["labels_without_audio"], audio_without_labels=rep["audio_without_labels"],
                       duplicate_audio=rep.get("duplicate_audio", 0), label_rows=rep.get("label_rows", 0),
                       label_rows_dropped=rep.get("label_rows_dropped", {}),
                       label_rows_dropped_lines=rep.get("label_rows_dropped_lines", []),
                       label_values_not_used=rep.get("label_values_not_used", []),
                       columns_not_read=rep.get("columns_not_read", []))


# ---------------------------------------------------------------------------------------------
# reading a store


class Store:
    """A finished store opened read-only: ids, the memory-mapped front-end array, labels and descriptors."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        m = _read_manifest(self.path)
        if m is None:
            raise SongfeatError(self.path, "not a songfeat store (no manifest.json); build one with `songfeat build`")
        if m.get("format") != FORMAT:
            raise SongfeatError(self.path, f"unsupported store format {m.get('format')!r} (this songfeat reads {FORMAT})")
        if not m.get("complete"):
            raise SongfeatError(self.path, "store is incomplete (its build was interrupted); rerun `songfeat build` with the same arguments to finish it")
        self._manifest = m
        self.spec: FrontendSpec = FrontendSpec.from_dict(m["frontend"])
        self._index = _read_parquet(self.path / INDEX)
        self._ids: list[str] = self._index["track_id"].astype(str).tolist()
        self._row = {t: i for i, t in enumerate(self._ids)}
        self._array: np.ndarray | None = None

    @property
    def manifest(self) -> dict:
        """Provenance: label file, audio dir, counts, front-end spec, songfeat version, created."""
        return dict(self._manifest)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, track_id: object) -> bool:
        return track_id in self._row

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, {len(self)} clips, {self._manifest.get('frontend_name')} {self.spec.shape})"

    def ids(self) -> list[str]:
        """Track ids in build order; row i of array() belongs to ids()[i]."""
        return list(self._ids)

    def array(self) -> np.ndarray:
        """The read-only memmap [N, C, T] float32 of front-end tensors, rows in ids() order."""
        if self._array is None:
            if len(self._ids) == 0:
                self._array = np.zeros((0, *self.spec.shape), dtype=np.float32)
            else:
                try:
                    self._array = np.load(self.path / FEATURES, mmap_mode="r")
                except FileNotFoundError:
                    raise SongfeatError(self.path / FEATURES, "missing from the store; rebuild the store") from None
                except (OSError, ValueError, EOFError) as e:  # a cut-off header or data shorter than the header says
                    raise SongfeatError(self.path / FEATURES, f"damaged array ({e}); rebuild the store") from None
            if self._array.shape != (len(self._ids), *self.spec.shape):
                raise SongfeatError(self.path / FEATURES, f"shape {self._array.shape} does not match the index ({len(self._ids)} clips, {self.spec.shape})")
        return self._array

    def features(self, track_id: str) -> np.ndarray:
        """The cached front-end tensor [C, T] float32 of one clip (a copy); KeyError for an unknown id."""
        try:
            row = self._row[track_id]
        except KeyError:
            raise KeyError(f"{track_id!r} is not in the store at {self.path}") from None
        return np.array(self.array()[row])

    def rows(self, track_ids: list[str]) -> np.ndarray:
        """Row numbers of `track_ids` in array(), e.g. to index a split."""
        return np.array([self._row[t] for t in track_ids], dtype=np.int64)

    def content_ids(self) -> dict[str, str] | None:
        """Track id -> the content id (`analyze.content_id`) of the file each clip was built from, or None for a store
        built before they were recorded: what a bundle trained on it records so evaluate-audio knows its clips by content."""
        if "content" not in self._index.columns:
            return None
        return dict(zip(self._ids, self._index["content"]))

    def labels(self) -> pd.DataFrame:
        """Normalised labels, index track_id in ids() order (NaN where the label file had none)."""
        return _read_parquet(self.path / LABELS).reindex(self._ids)

    def descriptors(self) -> pd.DataFrame:
        """Measured features, index track_id in ids() order: duration_ms, loudness, tempo, key, mode, time_signature (+ confidences)."""
        return _read_parquet(self.path / DESCRIPTORS).reindex(self._ids)

    def index(self) -> pd.DataFrame:
        """The Parquet index: row, track_id, path (the audio file), audio_seconds, content (none in an older store)."""
        return self._index.copy()

    def report(self) -> dict:
        """The build report: failures with reasons and how labels and audio matched."""
        return json.loads((self.path / REPORT_JSON).read_text(encoding="utf-8"))


def open_store(path: str | Path) -> Store:
    """Open a finished store folder; SongfeatError naming the folder if it is missing or incomplete."""
    p = Path(path)
    if not p.is_dir():
        raise SongfeatError(p, "no such store folder" if not p.exists() else "not a folder")
    return Store(p)
