"""Build throughput (clips/s) of `songfeat build` against a plain librosa loop over the same files, in one process.

    .venv/bin/python benchmarks/bench_build.py                 # the 102 previews in ../shared when present
    .venv/bin/python benchmarks/bench_build.py --generated 24  # 24 generated 30-s clips instead

The baseline is what the seed did per file, sequentially: librosa.load(sr=44100, mono=True) and
librosa.feature.mfcc with the seed's settings (20 coefficients, n_fft 4096, hop 8192, 256 HTK mels).
`songfeat build` is timed wall-clock from the call to the finished store (pool start-up included),
once with front-ends only (the same work as the baseline) and once with descriptors too (tempo,
key, loudness, metre: much more work than the baseline does). Each writes a fresh store in a temp
folder. Machines shared with other jobs make every figure noisy: the load average is printed.

`--limit N` takes the first N clips (by track id) of either set; `--workers` (default 2) and `--frontend` (default
mfcc) are `songfeat build`'s. Needs the `bench` extra (librosa, pandas, torch); without it, it stops with one line.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

import benchutil

ROOT = Path(__file__).resolve().parents[1]
SHARED = benchutil.shared_data() / "spotify-previews"
SEED_MFCC = dict(n_mfcc=20, n_fft=4096, hop_length=8192, n_mels=256, htk=True)


def generated_clips(folder: Path, n: int, seconds: float = 30.0, sr: int = 44100) -> tuple[Path, Path]:
    """Write n distinct 30-s wav clips and a labels CSV for them; returns (labels, audio folder)."""
    import pandas as pd
    import soundfile as sf

    from songfeat import features

    audio = folder / "audio"
    audio.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    t = np.arange(int(seconds * sr)) / sr
    for i in range(n):
        tid = f"B{i:05d}" + "abcdefghijklmnop"
        y = 0.3 * np.sin(2 * np.pi * (110 + 7 * i) * t) + 0.05 * rng.standard_normal(t.size)
        sf.write(audio / f"{tid}.wav", y.astype(np.float32), sr)
        rows.append([tid, *[0.5] * 7, 120.0, -8.0, 0, 1, 4])
    labels = folder / "labels.csv"
    pd.DataFrame(rows, columns=["track_id", *features.LABEL_COLUMNS]).to_csv(labels, index=False)
    return labels, audio


def librosa_loop(files: list[Path]) -> float:
    """The baseline: seconds to load + MFCC each file with librosa, one after another."""
    import librosa

    librosa.feature.mfcc(y=np.zeros(44100, dtype=np.float32), sr=44100, **SEED_MFCC)  # warm-up, not timed
    t0 = time.perf_counter()
    for f in files:
        y, sr = librosa.load(str(f), sr=44100, mono=True)
        m = librosa.feature.mfcc(y=y, sr=sr, **SEED_MFCC)
        assert m.shape[0] == 20
    return time.perf_counter() - t0


def songfeat_build(labels: Path, audio: Path, out: Path, workers: int, frontend: str, descriptors: bool, limit: int | None) -> tuple[float, int]:
    """Seconds for a fresh `build_store`, and the clips it built."""
    from songfeat.data.store import build_store

    t0 = time.perf_counter()
    r = build_store(labels, audio, out, frontend=frontend, workers=workers, progress=False, limit=limit, descriptors=descriptors)
    return time.perf_counter() - t0, r.built + len(r.failed)


def main() -> None:
    """Run the baseline and the builds on the same files and print clips/s and ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generated", type=int, default=None, help="use N generated 30-s clips instead of the shared previews")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N previews")
    ap.add_argument("--workers", type=int, default=2, help="songfeat build's workers (default 2)")
    ap.add_argument("--frontend", default="mfcc", help="songfeat build's front-end (default mfcc)")
    ap.add_argument("--skip-descriptors", action="store_true", help="time only the front-end-only build")
    args = ap.parse_args()
    benchutil.at_least_one(generated=args.generated, limit=args.limit, workers=args.workers)
    benchutil.require("librosa", "pandas", "torch", why="the baseline is a librosa loop; build needs the train extra")
    from songfeat.frontend import SPECS

    if args.frontend not in SPECS:
        raise benchutil.fail(f"unknown --frontend {args.frontend!r}; choose one of {', '.join(SPECS)}")

    tmp = Path(tempfile.mkdtemp(prefix="songfeat-bench-"))
    try:
        if args.generated is None and (SHARED / "labels.csv").is_file():
            labels, audio, what = SHARED / "labels.csv", SHARED / "audio", f"the Spotify previews in {SHARED}"
        else:
            n = args.generated or min(24, args.limit or 24)  # no more clips than --limit will use
            labels, audio = generated_clips(tmp / "data", n)
            what = "generated 30-s wav clips"
        files = sorted(p for p in audio.iterdir() if p.is_file())
        if args.limit is not None:
            files = files[: args.limit]
        print(f"clips: {len(files)} ({what}); workers: {args.workers}; front-end: {args.frontend}; "
              f"cores: {os.cpu_count()}; load average before: {os.getloadavg()[0]:.2f}")

        base_s = librosa_loop(files)
        base = len(files) / base_s
        print(f"librosa loop (load + seed MFCC, sequential): {base_s:7.2f} s  {base:6.2f} clips/s")

        runs = [("songfeat build --no-descriptors", False)] + ([] if args.skip_descriptors else [("songfeat build (with descriptors)", True)])
        for name, desc in runs:
            secs, n = songfeat_build(labels, audio, tmp / f"store-{int(desc)}", args.workers, args.frontend, desc, args.limit)
            rate = n / secs
            print(f"{name:<44}: {secs:7.2f} s  {rate:6.2f} clips/s  ratio vs librosa loop: {rate / base:5.2f}x")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
