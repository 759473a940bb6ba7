"""The product's heart: audio paths in, Spotify-shaped audio-features dicts out.

One pass over each file: it is streamed in 30-s windows; every window adds to the measured
descriptors' evidence (tempo, key, loudness, ... are decided once over the whole song) and, when the
model reads audio, is turned into a front-end tensor. Learned features are predicted per window
and combined as the duration-weighted mean over windows; a trailing window shorter than
`MIN_TAIL_SECONDS` is left out of that mean when a full window exists (it would be mostly tiling).
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import features
from .audio import SAMPLE_RATE, check_usable, iter_windows
from .errors import AudioError, SongfeatError

MIN_TAIL_SECONDS = 10.0  # a last window shorter than this is not used for learned features
EXTRA_KEYS = ("tempo_confidence", "tempo_alternatives", "key_confidence", "mode_confidence", "time_signature_confidence")
_BUNDLES: dict = {}


def content_id(path: str | Path) -> str:
    """A stable id for a file that is not named by a Spotify id: the first 22 hex digits of its SHA-256."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:22]


def track_identity(path: str | Path) -> dict:
    """Spotify's identity fields for a file: the stem when it is a Spotify id, else a content hash."""
    stem = Path(path).stem
    if features.is_spotify_id(stem):
        return {"id": stem, "uri": f"spotify:track:{stem}",
                "track_href": f"https://api.spotify.com/v1/tracks/{stem}",
                "analysis_url": f"https://api.spotify.com/v1/audio-analysis/{stem}"}
    cid = content_id(path)
    return {"id": cid, "uri": f"songfeat:track:{cid}", "track_href": None, "analysis_url": None}


def get_bundle(model: str | Path | None = None):
    """Load (once per process, again if its config changed) the bundle named by `model`; None: the default."""
    from .bundle import CONFIG, DEFAULT_DIR, load_bundle

    folder = DEFAULT_DIR if model in (None, "default") else Path(model)
    try:
        key = (str(folder.resolve()), (folder / CONFIG).stat().st_mtime_ns)
    except OSError:
        key = (str(folder), None)  # load_bundle raises the clear error
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
    evidence: np.ndarray | None = None  # [W, D] the heads' inputs per window (tagger, VAD, dynamics)


def read_clip(path: str | Path, spec=None, evidence_layout: list[dict] | None = None) -> Clip:
    """Stream a file once: descriptors over the whole song, and `spec`'s front-end (or, given
    `evidence_layout`, the heads' evidence vector) per window.

    Raises SongfeatError (with the file and reason) for unreadable, empty, too short or silent audio.
    """
    from . import descriptors

    evidence, weights, fronts, rows = [], [], [], []
    for w in iter_windows(path):
        ev = descriptors.window_evidence(w, SAMPLE_RATE)
        evidence.append(ev)
        if (spec is None and evidence_layout is None) or (w.size < MIN_TAIL_SECONDS * SAMPLE_RATE and weights):
            continue
        if spec is not None:
            from .frontend import compute, fit_window

            fronts.append(compute(spec, fit_window(w, spec)).numpy())  # one window at a time: memory stays flat
        if evidence_layout is not None:
            from .evidence import window_inputs
            from .heads import assemble

            tagger = any(p["block"] == "tagger" for p in evidence_layout)
            blocks = window_inputs(w, SAMPLE_RATE, ev, with_tagger=tagger)
            rows.append(assemble({k: v[None] for k, v in blocks.items()}, evidence_layout))
        weights.append(w.size)
    check_usable(path, sum(e.n_samples for e in evidence), max((e.peak for e in evidence), default=0.0))
    return Clip(str(path), descriptors.combine(evidence),
                np.concatenate(fronts) if fronts else None,
                np.asarray(weights, dtype=np.float64) if weights else None,
                np.concatenate(rows) if rows else None)


def predict_clip(bundle, clip: Clip) -> dict[str, float]:
    """The bundle's learned features for one clip: per window, then the duration-weighted mean."""
    numeric = None
    if "numeric" in bundle.needs:
        numeric = np.asarray([clip.descriptors.numeric(bundle.numeric_inputs)], dtype=np.float32)
    if "evidence" in bundle.needs:
        num = None if numeric is None else np.repeat(numeric, len(clip.evidence), axis=0)
        learned = np.average(bundle.predict(numeric=num, evidence=clip.evidence), axis=0, weights=clip.weights)
    elif "frontend" in bundle.needs:
        num = None if numeric is None else np.repeat(numeric, len(clip.frontend), axis=0)
        learned = np.average(bundle.predict(clip.frontend, num), axis=0, weights=clip.weights)
    else:
        learned = bundle.predict(None, numeric)[0]
    return dict(zip(bundle.targets, (float(v) for v in learned)))


def analyze(path: str | Path, model: str | Path | None = None) -> dict:
    """Analyze one audio file and return Spotify's audio-features object (plus confidences).

    Raises SongfeatError (with the file and reason) for unreadable, empty, too short or silent audio.
    """
    bundle = get_bundle(model)
    _check_bundle_for_audio(bundle)
    clip = read_clip(path, bundle.frontend if "frontend" in bundle.needs else None,
                     bundle.evidence_layout if "evidence" in bundle.needs else None)
    return to_spotify(path, predict_clip(bundle, clip), clip.descriptors)


def to_spotify(path: str | Path, learned: dict, desc) -> dict:
    """Assemble Spotify's audio-features object from learned values and measured descriptors."""
    d = desc.to_dict()
    out: dict = {}
    ident = track_identity(path)
    for key in features.SPOTIFY_KEYS:
        if key == "type":
            out[key] = "audio_features"
        elif key in ident:
            out[key] = ident[key]
        elif key in learned:
            out[key] = round(features.clip_value(key, learned[key]), 4)
        elif key in ("key", "mode", "time_signature", "duration_ms"):
            out[key] = int(features.clip_value(key, d[key]))
        elif key in ("tempo", "loudness"):
            out[key] = round(features.clip_value(key, d[key]), 3)
        else:  # a learned feature this model does not predict
            out[key] = None
    for key in EXTRA_KEYS:
        v = d.get(key)
        out[key] = [round(float(x), 3) for x in v] if isinstance(v, (list, tuple)) else (None if v is None else round(float(v), 3))
    return out


@dataclass
class Outcome:
    """One file's result in a batch: the features, or the error that stopped it."""

    path: str
    features: dict | None = None
    error: str | None = None


def _analyze_one(args: tuple[str, str | None]) -> Outcome:
    path, model = args
    try:
        return Outcome(path, analyze(path, model))
    except SongfeatError as e:
        return Outcome(path, error=str(e))
    except MemoryError:
        return Outcome(path, error=f"{path}: out of memory while analysing")
    except Exception as e:  # a library failure on one file must not end the batch
        return Outcome(path, error=f"{path}: analysis failed ({type(e).__name__}: {e})")


def _init_worker() -> None:
    """Worker-process start-up: one torch thread each, so N workers use N cores, not N x cores."""
    import torch

    torch.set_num_threads(1)


def analyze_many(paths: Iterable[str | Path], model: str | Path | None = None, workers: int = 1,
                 on_done: Callable[[Outcome], None] | None = None) -> Iterator[Outcome]:
    """Analyze many files, yielding an Outcome per file in input order; bad files become errors, not exceptions."""
    jobs = [(str(p), None if model is None else str(model)) for p in paths]
    if model is not None or not jobs:
        get_bundle(model)  # fail early, once, on a bad --model
    if workers <= 1 or len(jobs) <= 1:
        results: Iterable[Outcome] = map(_analyze_one, jobs)
        for r in results:
            if on_done:
                on_done(r)
            yield r
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker) as pool:
        for r in pool.map(_analyze_one, jobs, chunksize=1):
            if on_done:
                on_done(r)
            yield r


AUTO_PARALLEL_FILES = 8  # below this many files, starting worker processes (each imports torch) costs more than it saves


def auto_workers(n_files: int) -> int:
    """Worker processes when the user does not say: 1 for a few files, else one per usable CPU."""
    if n_files < AUTO_PARALLEL_FILES:
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, n_files))


__all__ = ["analyze", "analyze_many", "Outcome", "to_spotify", "track_identity", "content_id", "AudioError"]
