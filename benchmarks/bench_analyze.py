"""Speed of `songfeat analyze` on a folder of 30-s clips: the lean path, the torch path, the librosa pipeline.

All run as whole processes, start-up included, on the same files, one after the other in this
process's timing loop: songfeat on its lean runtime (numpy front-ends, models in onnxruntime, the
default), on the torch path (SONGFEAT_BACKEND=torch: torch front-end and models, what analysis ran
before the lean runtime), and the hand-written librosa pipeline (benchmarks/librosa_baseline.py).
Every peer first runs once untimed (librosa's numba JIT compiles once per install and caches on
disk). Then cold single-file runs of both paths, and where songfeat's time goes (imports, decode,
descriptors, 16-kHz resampling, VAD, tagger, dynamics, MFCC summary, heads) measured in-process on one thread.
Needs the `bench` extra (torch and librosa for the two comparisons); without it, it stops with one line.

    python benchmarks/bench_analyze.py [--files N] [--audio DIR] [--repeat R] [--plot PNG]

`--files` (default 20): how many clips; `--repeat` (default 1): timed round-robin rounds of the whole runs (the
cold single-file runs take at least 3). With `--plot`, also draws the whole-process times against librosa's and
the lean path's per-stage cost into a PNG.

Audio: the first N mp3 files of `--audio DIR`, else of the dev previews in ../shared/data/spotify-previews/audio
when present, else N generated 30-s clips written as mp3 into a temporary folder. A folder without mp3 files, or
an mp3 no decoder reads, is one error line before anything is timed.
"""
from __future__ import annotations

import argparse
import importlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchutil

ROOT = Path(__file__).resolve().parents[1]
PREVIEWS = benchutil.shared_data() / "spotify-previews" / "audio"
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
    """The first n mp3s of `audio` (default: the dev previews when present), else n generated clips in tmp; and a label.

    A folder with no mp3 in it, or an mp3 no decoder reads, stops the benchmark with one line (the runs would time
    nothing, or the peers' error paths)."""
    src = audio or (PREVIEWS if PREVIEWS.is_dir() else None)
    if src is not None:
        if not src.is_dir():
            raise benchutil.fail(f"{src}: no such folder")
        files = benchutil.readable(sorted(src.glob("*.mp3"))[:n])
        if not files:
            raise benchutil.fail(f"{src}: no mp3 files in it")
        return files, f"{len(files)} clips from {'/'.join(src.resolve().parts[-3:])}"
    files = generated_clips(tmp, n)
    return files, f"{len(files)} generated 30-s mp3 clips"


BACKENDS = {"lean": "onnx", "torch": "torch"}


def timed(cmd: list[str], repeat: int, backend: str = "onnx") -> float:
    """Median wall time of a whole process over `repeat` runs; fails loudly if the process fails.

    SONGFEAT_BACKEND is set for the run: onnx (the lean path) or torch."""
    times = []
    env = {**os.environ, "SONGFEAT_BACKEND": backend}
    for _ in range(repeat):
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - t0)
        if p.returncode != 0:
            raise SystemExit(f"benchmark command failed ({p.returncode}): {' '.join(cmd[:4])} ...\n{p.stderr[-2000:]}")
    return statistics.median(times)


def breakdown(files: list[Path], backend: str) -> dict[str, float]:
    """Seconds per file spent in each stage, measured in-process after imports (one thread, as a worker runs)."""
    os.environ["SONGFEAT_BACKEND"] = backend
    t0 = time.perf_counter()
    import numpy as np

    if backend == "torch":
        importlib.import_module("torch")  # its import is part of the torch path's cost
    from songfeat import descriptors, evidence, mfcc, runtime, tagger, vad
    from songfeat.analyze import Clip, get_bundle, predict_clip, to_spotify
    from songfeat.audio import SAMPLE_RATE, iter_windows, learned_window
    from songfeat.heads import assemble
    t_import = time.perf_counter() - t0
    runtime.set_threads(1)
    bundle = get_bundle()
    lay = bundle.evidence_layout
    acc = dict.fromkeys(("decode", "descriptors", "resample 16 kHz", "VAD", "pitch", "tagger", "dynamics", "MFCC summary", "heads"),
                        0.0)
    n_windows = 0
    for f in files:
        t = time.perf_counter()
        windows = list(iter_windows(f))
        acc["decode"] += time.perf_counter() - t
        t = time.perf_counter()
        shared = [mfcc.SharedFrames(w.size, SAMPLE_RATE) for w in windows]  # the MFCC frames the descriptors' STFT holds
        ev = [descriptors.window_evidence(w, SAMPLE_RATE, on_power=s) for w, s in zip(windows, shared)]
        desc = descriptors.combine(ev)
        acc["descriptors"] += time.perf_counter() - t
        rows = []
        for i, (w, e, sh) in enumerate(zip(windows, ev, shared)):
            if not learned_window(w.size, SAMPLE_RATE, i > 0):  # analyze leaves short tails out of the learned features
                continue
            n_windows += 1
            t = time.perf_counter()
            y16 = evidence.resample16(w, SAMPLE_RATE)
            acc["resample 16 kHz"] += time.perf_counter() - t
            t = time.perf_counter()
            probs = vad.speech_probs(y16, evidence.RATE16)
            speech = vad.summarise(probs)
            v = np.array([speech[k] for k in vad.STATS], dtype=np.float32)
            acc["VAD"] += time.perf_counter() - t
            t = time.perf_counter()
            tg = tagger.vector(tagger.describe(y16, sr=evidence.RATE16, max_patches=evidence.TAGGER_PATCHES, backend=backend))
            acc["tagger"] += time.perf_counter() - t
            t = time.perf_counter()
            dyn = evidence.dynamics(e, y16)
            acc["dynamics"] += time.perf_counter() - t
            t = time.perf_counter()
            pv, sp = evidence.voice(y16, probs, dyn[evidence.DYNAMICS.index("onset_regularity")])
            acc["pitch"] += time.perf_counter() - t
            t = time.perf_counter()
            mf, mb = mfcc.summaries(w, SAMPLE_RATE, sh, band=True)  # the ridge member reads the band-limited one
            acc["MFCC summary"] += time.perf_counter() - t
            rows.append(assemble({"tagger": tg[None], "vad": v[None], "pitch": pv[None], "spoken": sp[None],
                                  "dynamics": dyn[None], "mfcc": mf[None], "mfcc_band": mb[None]}, lay))
        t = time.perf_counter()
        to_spotify(f, predict_clip(bundle, Clip(str(f), desc, None, np.ones(len(rows)), np.concatenate(rows))), desc)
        acc["heads"] += time.perf_counter() - t
    out = {k: v / len(files) for k, v in acc.items()}
    out["windows per file"] = n_windows / len(files)
    out["import (once)"] = t_import
    return out


def _breakdown_in_child(files: list[Path], backend: str) -> dict[str, float]:
    """`breakdown` in a fresh interpreter, so each path pays its own imports."""
    import json

    code = (f"import json, sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import bench_analyze as b; "
            f"print(json.dumps(b.breakdown([__import__('pathlib').Path(p) for p in {list(map(str, files))!r}], {backend!r})))")
    p = subprocess.run([PY, "-c", code], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"breakdown ({backend}) failed:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def save_plot(path: Path, base: float, secs: dict[str, float], parts: dict[str, float], label: str) -> Path:
    """Left: each configuration's whole-process seconds with its ratio to the librosa pipeline's; right: where the lean
    path's time goes per file (ms, in-process, one thread)."""
    from songfeat.plotting import pyplot, save_png

    plt = pyplot()
    fig, (ax, axs) = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [1.3, 1]})
    names = ["librosa pipeline (1 process)", *secs]
    vals = [base, *secs.values()]
    bars = ax.barh(names, vals, color=["#9aa5b1"] + ["#2b6cb0" if "lean" in n else "#8fb3e0" for n in secs])
    ax.bar_label(bars, [f"{v:.2f} s ({base / v:.2f}x)" for v in vals], fontsize=8, padding=3)
    ax.axvline(base / 2, color="#52606d", lw=1, ls="--", label="half the librosa pipeline's time (2x)")
    ax.legend(fontsize=7, loc="upper right", frameon=False)
    ax.invert_yaxis()
    ax.set_xlim(0, max(vals) * 1.3)
    ax.set_xlabel("seconds, whole process (lower is better; in brackets: speed vs librosa)")
    ax.set_title(label, fontsize=9)
    ax.tick_params(axis="y", labelsize=8)
    stages = {k: v * 1000 for k, v in parts.items() if k not in ("windows per file", "import (once)")}
    order = sorted(stages, key=stages.get, reverse=True)
    b2 = axs.barh(order, [stages[k] for k in order], color="#2b6cb0")
    axs.bar_label(b2, [f"{stages[k]:.0f}" for k in order], fontsize=8, padding=3)
    axs.invert_yaxis()
    axs.set_xlim(0, max(stages.values()) * 1.2)
    axs.set_xlabel("ms per file, lean path, one thread")
    axs.set_title(f"where the time goes ({sum(stages.values()):.0f} ms a file)", fontsize=9)
    axs.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    return save_png(fig, path)


def main() -> None:
    from songfeat.analyze import auto_workers

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=20, help="clips to analyse (default 20)")
    ap.add_argument("--audio", type=Path, default=None, help="a folder of mp3 files (default: the dev previews, else generated clips)")
    ap.add_argument("--repeat", type=int, default=1, help="timed round-robin rounds of the whole runs (default 1)")
    ap.add_argument("--plot", type=Path, default=None, help="also draw the results into this PNG")
    args = ap.parse_args()
    benchutil.at_least_one(files=args.files, repeat=args.repeat)
    if args.plot is not None:  # refused now, not after minutes of runs
        from songfeat.output import check_output

        with benchutil.one_line_errors():
            check_output(args.plot, "the picture")
    benchutil.require("librosa", "pyloudnorm", "torch", why="bench_analyze times the librosa pipeline and the torch path beside songfeat")
    tmp = Path(tempfile.mkdtemp(prefix="songfeat-bench-"))
    try:
        files, label = bench_files(args.audio, args.files, tmp)
        folder = tmp / "clips"
        folder.mkdir()
        for f in files:
            os.symlink(f.resolve(), folder / f.name)
        print(f"songfeat analyze benchmark: {label}; {os.cpu_count()} CPUs")
        n = len(files)
        runs = {"baseline: librosa pipeline (1 process)": ([PY, str(ROOT / "benchmarks" / "librosa_baseline.py"),
                                                             *map(str, sorted(folder.iterdir()))], "onnx")}
        for name, backend in BACKENDS.items():
            w = auto_workers(n)
            runs[f"songfeat analyze, {name} (default: {w} worker{'s' * (w != 1)})"] = (
                [*SONGFEAT, "analyze", str(folder), "--format", "jsonl"], backend)
            runs[f"songfeat analyze, {name}, --workers 1"] = (
                [*SONGFEAT, "analyze", str(folder), "--format", "jsonl", "--workers", "1"], backend)
        # one untimed run of each peer on one file first: librosa's numba functions compile once per install and
        # are cached on disk (~30 s on this VM), a one-time cost that would otherwise land in its first timing
        timed([PY, str(ROOT / "benchmarks" / "librosa_baseline.py"), str(files[0])], 1)
        for backend in BACKENDS.values():
            timed([*SONGFEAT, "analyze", str(files[0])], 1, backend)
        print("warm-up: each peer ran once on one file, untimed (librosa's numba cache, the OS file cache)")
        reps = max(3, args.repeat)
        colds = {name: ([*SONGFEAT, "analyze", str(files[0])], backend) for name, backend in BACKENDS.items()}
        # round robin: every configuration once per round, so a change in the machine's load hits all alike
        times: dict[str, list[float]] = {k: [] for k in runs}
        cold_times: dict[str, list[float]] = {k: [] for k in colds}
        for r in range(reps):
            if r < args.repeat:
                for k, (cmd, backend) in runs.items():
                    times[k].append(timed(cmd, 1, backend))
            for k, (cmd, backend) in colds.items():
                cold_times[k].append(timed(cmd, 1, backend))
        secs = {k: statistics.median(v) for k, v in times.items()}
        cold = {k: statistics.median(v) for k, v in cold_times.items()}
        base = secs.pop("baseline: librosa pipeline (1 process)")
        rows = list(secs.items())
        print(f"{'run (whole process, start-up included)':52s} {'seconds':>8s} {'s/file':>7s} {'vs librosa':>10s}")
        print(f"{'baseline: librosa pipeline (1 process)':52s} {base:8.2f} {base / n:7.3f} {1.0:9.2f}x"
              f"   (medians of {args.repeat} round-robin rounds)")
        for label_, s in rows:
            print(f"{label_:52s} {s:8.2f} {s / n:7.3f} {base / s:9.2f}x")
        print(f"cold single-file run (median of {reps}): lean {cold['lean']:.2f} s, torch {cold['torch']:.2f} s")
        parts = {name: _breakdown_in_child(files, backend) for name, backend in BACKENDS.items()}
        print("where songfeat's time goes (in-process, one thread, per file):")
        print(f"  {'stage':16s} {'lean':>9s} {'torch':>9s}")
        for k in parts["lean"]:
            a, b = parts["lean"][k], parts["torch"][k]
            if k == "windows per file":
                print(f"  {k:16s} {a:9.2f} {b:9.2f}")
            else:
                print(f"  {k:16s} {a * 1000:6.1f} ms {b * 1000:6.1f} ms")
        if args.plot is not None:
            print(f"wrote {save_plot(args.plot, base, dict(rows), parts['lean'], f'songfeat analyze, {label}')}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
