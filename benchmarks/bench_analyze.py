"""Speed of `songfeat analyze` on a folder of 30-s clips, against the hand-written librosa pipeline.

Both run as whole processes, start-up included, on the same files, one after the other in this
process's timing loop (baseline: benchmarks/librosa_baseline.py). Then a cold single-file run, and
where songfeat's time goes (imports, decode, descriptors, 16-kHz resampling, VAD, tagger, dynamics,
heads) measured in-process.

    python benchmarks/bench_analyze.py [--files N] [--audio DIR] [--repeat R]

Default audio: the dev previews in ../shared/data/spotify-previews/audio when present, else
generated 30-s clips written as mp3 into a temporary folder.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREVIEWS = ROOT.parent / "shared" / "data" / "spotify-previews" / "audio"
PY = sys.executable
SONGFEAT = [PY, "-m", "songfeat.cli"]


def generated_clips(folder: Path, n: int) -> list[Path]:
    """n different 30-s mp3 clips made with numpy (clicks + chords + noise at varied tempi)."""
    import numpy as np
    import soundfile as sf

    sr, out = 44100, []
    t = np.arange(30 * sr) / sr
    for i in range(n):
        rng = np.random.default_rng(i)
        bpm = 80 + 10 * i % 100
        clicks = (np.mod(t, 60 / bpm) < 0.02) * 0.6
        chord = sum(np.sin(2 * np.pi * f * (1 + i / 50) * t) for f in (220, 277.2, 329.6)) / 6
        y = (clicks + chord + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
        p = folder / f"clip{i:03d}.mp3"
        sf.write(p, np.stack([y, y], 1), sr, format="MP3")
        out.append(p)
    return out


def bench_files(audio: Path | None, n: int, tmp: Path) -> tuple[list[Path], str]:
    """The first n mp3s of `audio` (default: the dev previews when present), else n generated clips in tmp; and a label."""
    src = audio or (PREVIEWS if PREVIEWS.is_dir() else None)
    if src is not None:
        files = sorted(src.glob("*.mp3"))[:n]
        return files, f"{len(files)} clips from {src}"
    files = generated_clips(tmp, n)
    return files, f"{len(files)} generated 30-s mp3 clips"


def timed(cmd: list[str], repeat: int) -> float:
    """Median wall time of a whole process over `repeat` runs; fails loudly if the process fails."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if p.returncode != 0:
            raise SystemExit(f"benchmark command failed ({p.returncode}): {' '.join(cmd[:4])} ...\n{p.stderr[-2000:]}")
    return statistics.median(times)


def breakdown(files: list[Path]) -> dict[str, float]:
    """Seconds per file spent in each stage, measured in-process after imports (one thread, as a worker runs)."""
    t0 = time.perf_counter()
    import numpy as np
    import torch

    from songfeat import descriptors, evidence, tagger, vad
    from songfeat.analyze import MIN_TAIL_SECONDS, Clip, get_bundle, predict_clip, to_spotify
    from songfeat.audio import SAMPLE_RATE, iter_windows
    from songfeat.heads import assemble
    t_import = time.perf_counter() - t0
    torch.set_num_threads(1)
    bundle = get_bundle()
    lay = bundle.evidence_layout
    acc = dict.fromkeys(("decode", "descriptors", "resample 16 kHz", "VAD", "tagger", "dynamics", "heads"), 0.0)
    n_windows = 0
    for f in files:
        t = time.perf_counter()
        windows = list(iter_windows(f))
        acc["decode"] += time.perf_counter() - t
        t = time.perf_counter()
        ev = [descriptors.window_evidence(w) for w in windows]
        desc = descriptors.combine(ev)
        acc["descriptors"] += time.perf_counter() - t
        rows = []
        for i, (w, e) in enumerate(zip(windows, ev)):
            if i and w.size < MIN_TAIL_SECONDS * SAMPLE_RATE:  # analyze leaves short tails out of the learned features
                continue
            n_windows += 1
            t = time.perf_counter()
            y16 = evidence.resample16(w, SAMPLE_RATE)
            acc["resample 16 kHz"] += time.perf_counter() - t
            t = time.perf_counter()
            v = np.array([vad.describe(y16, evidence.RATE16)[k] for k in vad.STATS], dtype=np.float32)
            acc["VAD"] += time.perf_counter() - t
            t = time.perf_counter()
            tg = tagger.vector(tagger.describe(y16, sr=evidence.RATE16, max_patches=evidence.TAGGER_PATCHES))
            acc["tagger"] += time.perf_counter() - t
            t = time.perf_counter()
            dyn = evidence.dynamics(e, y16)
            acc["dynamics"] += time.perf_counter() - t
            rows.append(assemble({"tagger": tg[None], "vad": v[None], "dynamics": dyn[None]}, lay))
        t = time.perf_counter()
        to_spotify(f, predict_clip(bundle, Clip(str(f), desc, None, np.ones(len(rows)), np.concatenate(rows))), desc)
        acc["heads"] += time.perf_counter() - t
    out = {k: v / len(files) for k, v in acc.items()}
    out["windows per file"] = n_windows / len(files)
    out["import (once)"] = t_import
    return out


def main() -> None:
    from songfeat.analyze import auto_workers

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--audio", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="songfeat-bench-"))
    try:
        files, label = bench_files(args.audio, args.files, tmp)
        folder = tmp / "clips"
        folder.mkdir()
        for f in files:
            os.symlink(f.resolve(), folder / f.name)
        print(f"songfeat analyze benchmark: {label}; {os.cpu_count()} CPUs")
        base = timed([PY, str(ROOT / "benchmarks" / "librosa_baseline.py"), *map(str, sorted(folder.iterdir()))], args.repeat)
        ours = timed([*SONGFEAT, "analyze", str(folder), "--format", "jsonl"], args.repeat)
        ours1 = timed([*SONGFEAT, "analyze", str(folder), "--format", "jsonl", "--workers", "1"], args.repeat)
        cold = timed([*SONGFEAT, "analyze", str(files[0])], max(3, args.repeat))
        n = len(files)
        print(f"{'run (whole process, start-up included)':48s} {'seconds':>8s} {'s/file':>7s} {'speed-up':>8s}")
        print(f"{'baseline: librosa pipeline (1 process)':48s} {base:8.2f} {base / n:7.3f} {1.0:8.2f}x")
        auto = f"songfeat analyze (default: {auto_workers(n)} workers)"
        print(f"{auto:48s} {ours:8.2f} {ours / n:7.3f} {base / ours:8.2f}x")
        print(f"{'songfeat analyze --workers 1':48s} {ours1:8.2f} {ours1 / n:7.3f} {base / ours1:8.2f}x")
        print(f"cold single-file run (median of {max(3, args.repeat)}): {cold:.2f} s")
        print("where songfeat's time goes (in-process, per file):")
        for k, v in breakdown(files).items():
            print(f"  {k:16s} {v:8.2f}" if k == "windows per file" else f"  {k:16s} {v * 1000:8.1f} ms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
