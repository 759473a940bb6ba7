"""Cost of the measured features (tempo, key, mode, metre, loudness) per 30-s clip on ONE thread, against peers.

`bench_analyze.py` times whole `songfeat analyze` runs, most of whose time is the listening model; this one times
only what songfeat and its peers both compute from the audio, in this process, on the same decoded clips:

* songfeat: `songfeat.descriptors.measure` (tempo, confidence and alternatives, key, mode, time signature, loudness);
* Essentia (AGPL, the benchmark-only `bench` extra), the peers of `bench_measured.py`: `RhythmExtractor2013`
  (multifeature, its default and the one the accuracy table scores; and degara, its fast method) with `KeyExtractor`
  (bgate) and `LoudnessEBUR128`;
* librosa: `beat.beat_track` and a Krumhansl key on the mean `chroma_cqt` (22.05 kHz), with pyloudnorm's BS.1770.

Round robin: every clip goes through every peer in turn, `--repeat` times after one untimed warm-up round, so a slow
minute of the machine falls on all of them. Prints each peer's median seconds per clip and its time as a multiple of
songfeat's (above 1: songfeat is faster).

    python benchmarks/bench_descriptors.py [--files N] [--repeat R] [--audio DIR]

Audio: the first N mp3s of the dev previews (../shared/data/spotify-previews/audio) or of --audio, their first 30 s;
without either, N generated 30-s clips (`songfeat.synth` chord progressions over drum patterns). `--only` keeps some
peers (essentia, librosa; songfeat always runs). A missing peer library leaves that peer out with a note; with no
peer left, or a folder without mp3 files, or an mp3 no decoder reads, it stops with one line.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one thread for every peer (set before numpy loads BLAS)
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import benchutil  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PREVIEWS = benchutil.shared_data() / "spotify-previews" / "audio"
SR = 44100


def clips(audio: Path | None, n: int) -> tuple[list[np.ndarray], str]:
    """n mono 44.1-kHz clips of at most 30 s, decoded once by songfeat (every peer gets the same samples)."""
    from songfeat.audio import load_audio

    src = audio or (PREVIEWS if PREVIEWS.is_dir() else None)
    if src is not None:
        files = sorted(src.glob("*.mp3"))[:n]
        if not files:
            sys.exit(f"bench_descriptors: no mp3 files in {src}")
        with benchutil.one_line_errors():  # an unreadable mp3: its path and why, not a traceback
            return [load_audio(f, max_seconds=30.0) for f in files], f"{len(files)} clips from {src}"
    from songfeat import synth

    out = []
    for i in range(n):  # songfeat's own test material: a chord progression over a rock beat, keys and tempi varied
        y = synth.chord_progression(i % 12, i % 2, 30.0, SR) + synth.drum_pattern(80.0 + 13 * i, seconds=30.0, seed=i)
        out.append((y / np.abs(y).max() * 0.7).astype(np.float32))
    return out, f"{n} generated 30-s clips (songfeat.synth)"


def peer_songfeat(y: np.ndarray) -> None:
    from songfeat import descriptors

    descriptors.measure(y, SR)


def _essentia(method: str):
    def run(y: np.ndarray) -> None:
        es = benchutil.essentia_standard()
        es.RhythmExtractor2013(method=method)(y)
        es.KeyExtractor(profileType="bgate")(y)
        es.LoudnessEBUR128(sampleRate=SR)(es.StereoMuxer()(y, y))
    return run


def peer_librosa(y: np.ndarray) -> None:
    import librosa
    import pyloudnorm

    y22 = librosa.resample(y, orig_sr=SR, target_sr=22050, res_type="soxr_hq")
    librosa.beat.beat_track(y=y22, sr=22050)
    chroma = librosa.feature.chroma_cqt(y=y22, sr=22050).mean(axis=1)
    benchutil.kk_key(chroma)
    pyloudnorm.Meter(SR).integrated_loudness(y.astype(np.float64))


def peers(only: list[str] | None) -> tuple[dict, list[str]]:
    """The peers that can run here, of those `only` names, and why each missing one cannot (Essentia and librosa are
    optional: a missing one is said, not fatal; one `only` leaves out is neither imported nor said)."""
    out = {"songfeat": peer_songfeat}
    missing: list[str] = []

    def present(*modules: str) -> bool:
        reasons = [r for r in map(benchutil.unavailable, modules) if r is not None]
        missing.extend(reasons[:1])
        return not reasons

    if (only is None or "essentia" in only) and present("essentia"):
        out["Essentia (multifeature)"] = _essentia("multifeature")
        out["Essentia (degara)"] = _essentia("degara")
    if (only is None or "librosa" in only) and present("librosa", "pyloudnorm"):
        out["librosa"] = peer_librosa
    return out, missing


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=20, help="clips to time (default 20)")
    ap.add_argument("--repeat", type=int, default=3, help="timed rounds after the warm-up round (default 3)")
    ap.add_argument("--audio", type=Path, default=None,
                    help="a folder of mp3 files (default: the dev previews, else generated clips)")
    ap.add_argument("--only", default=None, help="comma-separated: essentia, librosa (songfeat always runs)")
    a = ap.parse_args(argv)
    if a.files < 1 or a.repeat < 1:
        ap.error("--files and --repeat must be at least 1")
    only = [p.strip() for p in a.only.lower().split(",") if p.strip()] if a.only else None
    if only is not None and (not only or set(only) - {"essentia", "librosa"}):
        ap.error(f"--only takes essentia and/or librosa, not {a.only!r}")
    run, missing = peers(only)
    if len(run) < 2:  # songfeat alone: nothing to compare its time with; one line saying why
        raise benchutil.fail("no peer to compare with: " + ("; ".join(missing) or "Essentia and librosa are left out"))
    for why in missing:
        print(f"{why}: its peer is left out", file=sys.stderr)
    ys, label = clips(a.audio, a.files)
    print(f"{label}; {a.repeat} timed round(s) after one warm-up, round robin, one thread", flush=True)
    secs: dict[str, list[float]] = {k: [] for k in run}
    for rnd in range(a.repeat + 1):
        for y in ys:
            for name, f in run.items():
                t0 = time.perf_counter()
                f(y)
                if rnd:  # round 0 warms every peer up (imports, numba, Essentia's factories)
                    secs[name].append(time.perf_counter() - t0)
    base = statistics.median(secs["songfeat"])
    print("| peer | median s per clip | total s | × songfeat's time |")
    print("|---|---|---|---|")
    for name, s in secs.items():
        print(f"| {name} | {statistics.median(s):.3f} | {sum(s):.2f} | {statistics.median(s) / base:.2f} |")


if __name__ == "__main__":
    main()
