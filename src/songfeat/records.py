"""Per-clip inputs of the heads, read once and cached on disk so validation and training reruns are fast.

A record holds, for one audio file: the whole-song descriptors, each used window's evidence blocks
(`songfeat.evidence`) with its duration weight, and the seed-style MFCC summary of the first window
(the input of the previous default model's ridge correction, kept as a baseline). Records are keyed
by the file's content hash and `RECORD_VERSION`, written atomically as .npz, and rebuilt when either
changes. A file that cannot be analysed becomes its error line (also cached, so it fails fast).
"""
from __future__ import annotations

import functools
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import atomic
from .errors import analysis_failed
from .provenance import MEASURING_CODE, source_digest, weights_digest

RECORD_VERSION = 1  # bump for a change in the record's layout; code changes are caught by code_version()
# The modules whose code decides a record's numbers: any edit to them makes new records.
_RECORD_CODE = MEASURING_CODE + ("models/musicnn.py", "records.py")
DEFAULT_CACHE = Path(os.environ.get("SONGFEAT_CACHE", Path.home() / ".cache" / "songfeat" / "records"))


@dataclass
class Record:
    """One clip's cached inputs: descriptors dict, blocks name -> [W, D], window weights [W]."""

    path: str
    descriptors: dict
    blocks: dict
    weights: np.ndarray
    content: str | None = None  # the file's `analyze.content_id` when a cache keyed it (read then, not again), else None

    @property
    def content_id(self) -> str:
        """The file's content id (`analyze.content_id`), the one its cache key was made from when it has one."""
        if self.content is None:
            from .analyze import content_id

            self.content = content_id(self.path)
        return self.content

    @property
    def mfcc_summary(self) -> np.ndarray:
        """The first window's MFCC summary, which the previous default read."""
        return self.blocks["mfcc"][0]

    def mean(self, name: str) -> np.ndarray:
        """Duration-weighted mean of one evidence block over the windows."""
        return np.average(self.blocks[name], axis=0, weights=self.weights)


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """A short hash of the code and listening-model weights that compute records: a cache never serves older numbers."""
    return weights_digest(source_digest(_RECORD_CODE)).hexdigest()[:10]


def _key(content: str, with_tagger: bool) -> str:
    """A record's cache file name: the file's content id, the record format and code, with or without the tagger."""
    from .evidence import TAGGER_PATCHES

    return f"{content}-v{RECORD_VERSION}-{code_version()}-{f't{TAGGER_PATCHES}' if with_tagger else 'n'}"


def compute_record(path: str | Path, with_tagger: bool = True) -> Record:
    """Stream a file once: descriptors, per-window evidence blocks, first-window MFCC summary.

    Runs torch, onnxruntime and numpy's BLAS on one thread, so a record is the same bytes in a worker process or
    the main one, on a machine of any core count (a BLAS pool as wide as the machine moved onset and chroma
    values in their last bits, enough to flip a nested weight-decay choice).
    """
    from .runtime import set_threads, threads as ort_threads, torch_threads

    if ort_threads() != 1:
        set_threads(1)  # onnxruntime's stays at 1 for the rest of the process: records come in batches
    with torch_threads(1):
        return _compute(path, with_tagger)


def _compute(path: str | Path, with_tagger: bool) -> Record:
    from . import descriptors
    from .audio import SAMPLE_RATE, check_windows, iter_windows, learned_window
    from .evidence import window_inputs
    from .mfcc import SharedFrames

    evs, weights, blocks = [], [], []
    for w in iter_windows(path):
        used = learned_window(w.size, SAMPLE_RATE, bool(weights))
        shared = SharedFrames(w.size, SAMPLE_RATE) if used else None  # the MFCC frames the descriptors' STFT holds
        ev = descriptors.window_evidence(w, SAMPLE_RATE, on_power=shared)
        evs.append(ev)
        if not used:
            continue
        blocks.append(window_inputs(w, SAMPLE_RATE, ev, with_tagger=with_tagger, shared=shared))
        weights.append(w.size)
    check_windows(path, evs)
    desc = descriptors.combine(evs).to_dict()
    stacked = {k: np.stack([b[k] for b in blocks]) for k in blocks[0]}
    return Record(str(path), desc, stacked, np.asarray(weights, dtype=np.float64))


def _write_npz(file: Path, **arrays) -> None:
    """Write arrays to `file` atomically: a temporary file beside it, renamed into place (an interrupted run leaves none)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    with atomic.replacing(file, "wb") as f:  # a file object: savez would add ".npz" to a temporary's name
        np.savez(f, **arrays)


def _save(rec: Record, file: Path) -> None:
    _write_npz(file, descriptors=json.dumps(rec.descriptors), weights=rec.weights,
               **{f"block_{k}": v for k, v in rec.blocks.items()})


def _save_error(err, file: Path) -> None:
    """Cache a failure as its reason alone: files with the same bytes share the entry, and each is named by its own path."""
    _write_npz(file, reason=err.reason, named=err.path is not None)


def _load(file: Path, path: str, content: str | None = None) -> Record | str | None:
    """The cached record or error line of `path`, or None when the entry cannot be read (cut off, corrupt, not ours):
    it is then computed again, not left out for good."""
    try:
        with np.load(file) as z:
            if "reason" in z:
                return f"{path}: {z['reason']}" if bool(z["named"]) else str(z["reason"])
            return Record(path, json.loads(str(z["descriptors"])), {k[6:]: z[k] for k in z.files if k.startswith("block_")},
                          z["weights"], content)
    except Exception:  # zipfile, pickle, json and key errors alike: any unreadable entry is a miss
        return None


def check_cache(cache: str | Path | None) -> None:
    """Refuse a cache that cannot be a folder before any clip is analysed (each record would be computed, then lost)."""
    from .errors import SongfeatError, existing_ancestor

    if cache is None:
        return
    p = existing_ancestor(cache)
    if not p.is_dir():
        raise SongfeatError(cache, f"cannot be the record cache: {p} is not a folder")
    try:  # a read-only place: every clip was analysed, each record failed to save, and the labels got the blame
        atomic.probe_folder(cache)
    except OSError as e:
        raise SongfeatError(cache, f"cannot write the record cache ({e.strerror or e})") from None


def get_record(path: str | Path, cache: str | Path | None = DEFAULT_CACHE, with_tagger: bool = True) -> Record | str:
    """The cached record of a file (computed and stored on a miss); an unreadable file gives its error line."""
    from .errors import SongfeatError

    file = content = None
    if cache is not None:
        from .analyze import content_id

        content = content_id(path)
        file = Path(cache) / f"{_key(content, with_tagger)}.npz"
        if file.is_file():
            cached = _load(file, str(path), content)
            if cached is not None:
                return cached
    try:
        rec = compute_record(path, with_tagger)
    except SongfeatError as e:
        if file is not None:
            _save_error(e, file)
        return str(e)
    rec.content = content
    if file is not None:
        _save(rec, file)
    return rec


def _one(args) -> Record | str:
    path, cache, with_tagger = args
    try:
        return get_record(path, cache, with_tagger)
    except Exception as e:  # a library failure on one file must not end the batch
        return analysis_failed(path, e)


def get_records(paths: list[str], cache: str | Path | None = DEFAULT_CACHE, with_tagger: bool = True,
                workers: int = 1, progress: bool = True) -> list[Record | str]:
    """get_record over many files, in `workers` processes, with a progress bar."""
    check_cache(cache)
    return map_files(_one, [(str(p), cache, with_tagger) for p in paths], workers, progress)


def map_files(fn, jobs: list, workers: int = 1, progress: bool = True) -> list:
    """fn over per-file jobs (tuples, the file first), in `workers` processes (one inference thread each), in order, with
    a progress bar. The processes are `workers.run_jobs`': a job whose process dies (the OOM killer, a decoder's crash)
    gives its file's error line, as fn's own failures do, and none outlives this process when it is killed (a
    ProcessPoolExecutor raised BrokenProcessPool for the first, and its workers waited on their queue for ever)."""
    from .analyze import ANALYSIS_PRELOAD, _init_worker
    from .workers import run_jobs

    pooled = workers > 1 and len(jobs) > 1
    results = (run_jobs(fn, jobs, workers=workers, init=_init_worker, preload=ANALYSIS_PRELOAD, fork=True) if pooled
               else map(fn, jobs))
    if progress:
        from .progress import track

        results = track(results, "reading clips", total=len(jobs))
    if not pooled:
        return list(results)
    out: list = [None] * len(jobs)
    for r in results:  # in the order they finish
        if r.log:  # what the job printed (a decoder's chatter), as a clip read in this process prints it
            sys.stderr.write(r.log)
        out[r.index] = r.value if r.ok else analysis_failed(jobs[r.index][0], r.value)
    return out


__all__ = ["Record", "get_record", "get_records", "compute_record", "check_cache", "DEFAULT_CACHE", "RECORD_VERSION"]
