"""The product's heart: audio paths in, Spotify-shaped audio-features dicts out.

One pass over each file: it is streamed in 30-s windows; every window adds to the measured
descriptors' evidence (tempo, key, loudness, ... are decided once over the whole song) and, when the
model reads audio, is turned into a front-end tensor. Learned features are predicted per window
and combined as the duration-weighted mean over windows; a trailing window shorter than
`audio.MIN_TAIL_SECONDS` is left out of that mean when a full window exists (it would be mostly tiling).
"""
from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

# numpy is imported inside the functions that use it: `songfeat --help` and `import songfeat` stay fast
if TYPE_CHECKING:  # annotations only
    import numpy as np

from . import features
from .audio import (SAMPLE_RATE, capture_output, check_windows, header_info, iter_windows, learned_window,
                    reporting_windows)
from .errors import AudioError, SongfeatError, analysis_failed

EXTRA_KEYS = ("tempo_confidence", "tempo_alternatives", "key_confidence", "mode_confidence", "time_signature_confidence",
              "key_name", "camelot")
NAMED_KEYS = {"key_name": features.key_name, "camelot": features.camelot}  # extras spelled out for DJs, from key and mode
_BUNDLES: dict = {}


def content_id(path: str | Path) -> str:
    """A stable id for a file that is not named by a Spotify id: the first 22 hex digits of its SHA-256."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:22]


def track_identity(path: str | Path, sha256: str | None = None) -> dict:
    """Spotify's identity fields for a file: the stem when it is a Spotify id, else a content hash (the first 22 hex
    digits of `sha256`, the file's SHA-256, when the caller has it: the file is not read a second time)."""
    stem = Path(path).stem
    if features.is_spotify_id(stem):
        return {"id": stem, "uri": f"spotify:track:{stem}",
                "track_href": f"https://api.spotify.com/v1/tracks/{stem}",
                "analysis_url": f"https://api.spotify.com/v1/audio-analysis/{stem}"}
    cid = sha256[:22] if sha256 else content_id(path)
    return {"id": cid, "uri": f"songfeat:track:{cid}", "track_href": None, "analysis_url": None}


def get_bundle(model: str | Path | None = None):
    """Load (once per process and backend, again if its files changed) the bundle named by `model`; None: the default."""
    from .bundle import CONFIG, DEFAULT_DIR, ONNX, WEIGHTS, load_bundle
    from .runtime import backend

    folder = DEFAULT_DIR if model in (None, "default") else Path(model)

    def stamp(name: str):
        try:
            return (folder / name).stat().st_mtime_ns
        except OSError:
            return None

    key = (str(folder.resolve()), stamp(CONFIG), stamp(WEIGHTS), stamp(ONNX), backend())
    if key not in _BUNDLES:
        _BUNDLES[key] = load_bundle(model)
    return _BUNDLES[key]


def _check_bundle_for_audio(bundle) -> None:
    if "numeric" in bundle.needs and bundle.config.get("numeric_source") == "labels":
        raise SongfeatError(bundle.path, "this model reads numeric inputs from a label table "
                            f"({', '.join(bundle.numeric_inputs)}), so it cannot analyze audio alone; "
                            "train it with measured inputs instead")


@dataclass
class Clip:
    """What one pass over a file yields: measured descriptors and the front-end of its windows."""

    path: str
    descriptors: object  # songfeat.descriptors.Descriptors
    frontend: np.ndarray | None  # [W, C, T] one row per window used for learned features
    weights: np.ndarray | None  # [W] samples per window, for the duration-weighted mean
    evidence: np.ndarray | None = None  # [W, D] the heads' inputs per window (tagger, VAD, pitch, spoken, dynamics)


def read_clip(path: str | Path, spec=None, evidence_layout: list[dict] | None = None,
              on_window: Callable[[float], None] | None = None) -> Clip:
    """Stream a file once: descriptors over the whole song, and `spec`'s front-end (or, given
    `evidence_layout`, the heads' evidence vector) per window; `on_window(seconds read so far)` after each window.

    Raises SongfeatError (with the file and reason) for unreadable, empty, too short or silent audio.
    """
    import numpy as np

    from . import descriptors

    evidence, weights, fronts, rows = [], [], [], []
    tag = evidence_layout is not None and any(p["block"] == "tagger" for p in evidence_layout)
    pool = _side_thread() if tag else None
    if pool is not None:
        pool.submit(_open_sessions)  # onnxruntime's import and the sessions load while the first window decodes
    windows = iter_windows(path)
    for w in windows if on_window is None else reporting_windows(windows, on_window):
        pending = y16 = None
        used = (spec is not None or evidence_layout is not None) and learned_window(w.size, SAMPLE_RATE, bool(weights))
        if pool is not None and used:  # the tagger (onnxruntime, no GIL) runs beside the measurements below
            from .evidence import resample16, tagger_block

            y16 = resample16(w, SAMPLE_RATE)
            pending = pool.submit(tagger_block, y16)
        shared = None
        if used and evidence_layout is not None:
            from .mfcc import SharedFrames

            shared = SharedFrames(w.size, SAMPLE_RATE)  # the MFCC frames the descriptors' STFT computes anyway
        ev = descriptors.window_evidence(w, SAMPLE_RATE, on_power=shared)
        evidence.append(ev)
        if not used:
            continue
        if spec is not None:
            from .frontend import compute, fit_window

            fronts.append(compute(spec, fit_window(w, spec)).numpy())  # one window at a time: memory stays flat
        if evidence_layout is not None:
            from .evidence import window_inputs
            from .heads import assemble

            blocks = window_inputs(w, SAMPLE_RATE, ev, with_tagger=tag and pending is None, y16=y16, shared=shared)
            if pending is not None:
                blocks["tagger"] = pending.result()
            rows.append(assemble({k: v[None] for k, v in blocks.items()}, evidence_layout))
        weights.append(w.size)
    check_windows(path, evidence)
    return Clip(str(path), descriptors.combine(evidence),
                np.concatenate(fronts) if fronts else None,
                np.asarray(weights, dtype=np.float64) if weights else None,
                np.concatenate(rows) if rows else None)


_SIDE: list = []
if hasattr(os, "register_at_fork"):  # a forked child has no copy of the thread: it makes its own
    os.register_at_fork(after_in_child=_SIDE.clear)


def _side_thread():
    """One helper thread for the tagger, when this process may use more than one core (not in batch workers); else None.

    A pure speed-up: the same computations, the tagger's beside the descriptors' and the VAD's.
    """
    from .runtime import threads

    if threads() < 2:
        return None
    if not _SIDE:
        from concurrent.futures import ThreadPoolExecutor

        _SIDE.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="songfeat-tagger"))
    return _SIDE[0]


def _open_sessions() -> None:
    """Create the tagger's and the VAD's onnxruntime sessions (each is created once per process anyway)."""
    from . import runtime, tagger, vad

    if runtime.backend() == "onnx":
        for name in tagger.MODELS:
            tagger.onnx_session(name)
    vad._session()


def predict_clip(bundle, clip: Clip) -> dict[str, float]:
    """The bundle's learned features for one clip: per window, then the duration-weighted mean (and a bundle's vocal
    gate on that mean)."""
    import numpy as np

    from . import vocal_gate

    numeric = None
    if "numeric" in bundle.needs:
        numeric = np.asarray([bundle.numeric_row(clip.descriptors)], dtype=np.float32)
    if "evidence" in bundle.needs:
        num = None if numeric is None else np.repeat(numeric, len(clip.evidence), axis=0)
        learned = np.average(bundle.predict(numeric=num, evidence=clip.evidence), axis=0, weights=clip.weights)
        learned = vocal_gate.apply_clip(bundle.config.get("vocal_gate"), learned, bundle.targets, clip.evidence,
                                        clip.weights, bundle.evidence_layout)
    elif "frontend" in bundle.needs:
        num = None if numeric is None else np.repeat(numeric, len(clip.frontend), axis=0)
        learned = np.average(bundle.predict(clip.frontend, num), axis=0, weights=clip.weights)
    else:
        learned = bundle.predict(None, numeric)[0]
    return dict(zip(bundle.targets, (float(v) for v in learned)))


def analyze(path: str | Path, model: str | Path | None = None, on_window: Callable[[float], None] | None = None) -> dict:
    """Analyze one audio file and return Spotify's audio-features object (plus confidences); `on_window(seconds
    analysed so far)` is called after each 30-s window (a progress hook for long files).

    Raises SongfeatError (with the file and reason) for unreadable, empty, too short or silent audio.
    """
    bundle = get_bundle(model)
    _check_bundle_for_audio(bundle)
    clip = read_clip(path, bundle.frontend if "frontend" in bundle.needs else None,
                     bundle.evidence_layout if "evidence" in bundle.needs else None, on_window)
    return to_spotify(path, predict_clip(bundle, clip), clip.descriptors)


MEASURED_KEYS = features.MEASURED_NUMERIC_INPUTS + ("duration_ms",)  # the descriptors' Spotify fields


def measured_values(d: dict) -> dict:
    """The descriptors' fields (`Descriptors.to_dict()`) as `songfeat analyze` prints them: MEASURED_KEYS clipped to
    their ranges and rounded, the confidences and alternatives to 3 places. `songfeat analysis`'s track block reads
    them here too, so the two outputs cannot drift apart."""
    out: dict = {}
    for key in MEASURED_KEYS:
        v = features.clip_value(key, d[key])
        out[key] = round(v, 3) if key in ("tempo", "loudness") else int(v)
    for key in EXTRA_KEYS:
        if key not in NAMED_KEYS:
            v = d.get(key)
            out[key] = [round(float(x), 3) for x in v] if isinstance(v, (list, tuple)) else (None if v is None else round(float(v), 3))
    return out


def to_spotify(path: str | Path, learned: dict, desc) -> dict:
    """Assemble Spotify's audio-features object from learned values and measured descriptors (`measured_values`)."""
    measured = measured_values(desc.to_dict())
    out: dict = {}
    ident = track_identity(path)
    for key in features.SPOTIFY_KEYS:
        if key == "type":
            out[key] = "audio_features"
        elif key in ident:
            out[key] = ident[key]
        elif key in learned:
            out[key] = round(features.clip_value(key, learned[key]), 4)
        elif key in measured:
            out[key] = measured[key]
        else:  # a learned feature this model does not predict
            out[key] = None
    for key in EXTRA_KEYS:
        out[key] = NAMED_KEYS[key](out["key"], out["mode"]) if key in NAMED_KEYS else measured[key]
    return out


@dataclass
class Outcome:
    """One file's result in a batch: the features, or the error that stopped it, plus what decoding reported."""

    path: str
    features: dict | None = None
    error: str | None = None  # '<file>: <reason>'
    warnings: list[str] = field(default_factory=list)  # one-line '<file>: <what>' (e.g. decoder errors skipped)
    log: str = ""  # raw decoder and library output behind the warnings, for a verbose mode


DEFAULT_TIMEOUT = 120.0  # seconds a file may take (per 10 minutes of audio, for longer files; see time_limit)
LONG_AUDIO_SECONDS = 600.0  # the unit of audio the time limit scales with
MAX_TIMEOUT_FACTOR = 18  # the limit stops growing at 3 h of audio: a header claiming more is not trusted further
# What the fork server imports once for analysis workers: the listening model's path (numpy, onnxruntime, soxr, soundfile),
# not torch. songfeat.frontend (torch) joins only when a bundle or SONGFEAT_BACKEND needs it: preloading it
# always cost every batch ~1.6 s of `import torch` wherever the train extra is installed.
ANALYSIS_PRELOAD = ("songfeat.analyze", "songfeat.descriptors", "songfeat.evidence", "songfeat.tagger", "songfeat.vad",
                    "songfeat.pitch", "songfeat.heads", "songfeat.genre_prior", "songfeat.vocal_gate", "onnxruntime", "soxr", "soundfile")


def time_limit(timeout: float, audio_seconds: float | None) -> float:
    """Seconds one file may take: `timeout`, scaled up for audio longer than 10 minutes (by its header), capped at 18x."""
    if not audio_seconds or audio_seconds <= LONG_AUDIO_SECONDS:
        return timeout
    return timeout * min(audio_seconds / LONG_AUDIO_SECONDS, MAX_TIMEOUT_FACTOR)


def header_seconds(path: str | Path) -> float | None:
    """The length a file's header gives (None when it does not say), probed quietly.

    Raises AudioError for a file no decoder recognises (as decoding it would).
    """
    return header_info(path).seconds


def ask_time_for(path: str | Path, timeout: float) -> float | None:
    """In a worker: a long song may take longer, so raise this job's limit to time_limit() once its length is known;
    returns that length (`header_seconds`).

    Raises AudioError for a file no decoder recognises (as decoding it would).
    """
    from .workers import allow

    seconds = header_seconds(path)
    allow(time_limit(timeout, seconds))
    return seconds


def _analyze_one(args: tuple, on_window: Callable[[float, float | None], None] | None = None) -> Outcome:
    """One file, start to end, with decoder output and warnings kept on the Outcome (never printed).

    `on_window(seconds done, seconds in all by the header or None)` after each 30-s window; in a worker, a job whose
    fourth item is true sends them to the batch process instead (`workers.report_progress`).
    """
    path, model = args[0], args[1]
    timeout = args[2] if len(args) > 2 else None
    if len(args) > 3 and args[3]:
        on_window = _report_to_batch
    with capture_output() as cap:
        try:
            seconds = ask_time_for(path, timeout) if timeout else header_seconds(path) if on_window else None
            tick = None if on_window is None else (lambda done: on_window(done, seconds))
            out = Outcome(path, analyze(path, model, tick))
        except SongfeatError as e:
            out = Outcome(path, error=str(e))
        except MemoryError:
            out = Outcome(path, error=f"{path}: out of memory while analysing")
        except Exception as e:  # a library failure on one file must not end the batch
            out = Outcome(path, error=analysis_failed(path, e))
    out.warnings, out.log = ([] if out.error else cap.warnings), cap.raw(path)  # a failed file: one line, its error
    return out


def _report_to_batch(done: float, total: float | None) -> None:
    """In a worker: how far the file is, sent to the batch process (whose stderr is the terminal's)."""
    from .workers import report_progress

    report_progress((done, total))


def _init_worker() -> None:
    """Worker-process start-up: one inference thread each (onnxruntime, and torch if loaded), so N workers use N cores."""
    from .runtime import set_threads

    set_threads(1)


def _start_analysis_worker(model: str | None, alone: bool = False) -> None:
    """An analysis worker's start-up: one inference thread (unless `alone`), and the bundle loaded (a bad one stops the batch once)."""
    if not alone:
        _init_worker()
    _check_bundle_for_audio(get_bundle(model))


def analysis_preload(bundle) -> tuple[str, ...]:
    """The modules analysis workers need imported before they fork: torch's only for a torch backend or front-end."""
    from .runtime import backend

    torch_needed = backend() == "torch" or "frontend" in bundle.needs
    return ANALYSIS_PRELOAD + (("songfeat.frontend",) if torch_needed else ())


def analyze_many(paths: str | Path | Iterable[str | Path], model: str | Path | None = None, workers: int = 1,
                 on_done: Callable[[Outcome], None] | None = None, timeout: float | None = None,
                 on_progress: Callable[[str, float, float | None], None] | None = None,
                 isolate: bool = False) -> Iterator[Outcome]:
    """Analyze many files, yielding an Outcome per file in input order; bad files become errors, not exceptions.

    Nothing is printed: decoder complaints and warnings come back on each Outcome. With `timeout`
    (seconds per file, see `time_limit`), `workers` > 1 or `isolate`, files run in worker processes and a
    file that overruns, or kills its worker (a decoder crash, the OOM killer), becomes an error; with none, in this process.
    A lone file with a timeout runs in a fork of this process (no new interpreter, same guarantees)
    with every CPU's inference threads. A bad `model` raises SongfeatError before any file is done.
    `on_progress(path, seconds done, seconds in all by the header or None)` is called in this process after each
    30-s window of a file (a progress hook for long files; never from inside a decoder's fd-2 capture).
    A lone path (a str or Path rather than a list of them) is one file.
    """
    model = None if model is None else str(model)
    if isinstance(paths, (str, os.PathLike)):  # a str was iterated letter by letter: one "no such file" per character
        paths = [paths]
    jobs = [(str(p), model, timeout) for p in paths]
    if not jobs or (workers <= 1 and not timeout and not isolate):
        bundle = get_bundle(model)  # fail early, once, on a bad model
        _check_bundle_for_audio(bundle)
        for job in jobs:
            r = _analyze_one(job, None if on_progress is None else functools.partial(on_progress, job[0]))
            if on_done:
                on_done(r)
            yield r
        return
    from .workers import run_jobs, with_output

    alone = len(jobs) == 1 and not isolate  # (isolated: the caller's one inference thread, as a Ray actor has)
    bundle = get_bundle(model)  # a bad model fails here, once; forked workers inherit it
    _check_bundle_for_audio(bundle)
    held: dict[int, Outcome] = {}
    nxt = 0
    # a worker's fd 2 is a capture file: with on_progress, its jobs send how far they are to this process instead
    sent = [(*job, on_progress is not None) for job in jobs]
    tell = None if on_progress is None else (lambda i, value: on_progress(jobs[i][0], *value))
    for res in run_jobs(_analyze_one, sent, workers=workers, timeout=timeout, init=_start_analysis_worker,
                        init_args=(model, alone), fork=True, preload=analysis_preload(bundle), on_progress=tell):
        path = jobs[res.index][0]
        if res.ok:
            out = res.value
            out.log = with_output(out.log, path, res.log)
        else:
            out = Outcome(path, error=f"{path}: {res.value}", log=with_output("", path, res.log))
        held[res.index] = out
        while nxt in held:
            r = held.pop(nxt)
            nxt += 1
            if on_done:
                on_done(r)
            yield r


AUTO_PARALLEL_FILES = 8  # below this many files, starting worker processes costs more than it saves


def auto_workers(n_files: int) -> int:
    """Worker processes when the user does not say: 1 for a few files, else one per usable CPU."""
    if n_files < AUTO_PARALLEL_FILES:
        return 1
    from .runtime import usable_cpus

    return max(1, min(usable_cpus(), n_files))


__all__ = ["analyze", "analyze_many", "Outcome", "to_spotify", "track_identity", "content_id", "AudioError"]
