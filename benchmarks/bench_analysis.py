"""Speed and memory of `songfeat analysis` (the audio-analysis object) against `songfeat analyze` on the same files.

Both run in this process, taking turns in each of `--repeat` rounds, on one core (BLAS, and torch where
installed, limited to one thread; `analyze`'s ONNX tagger uses a second), after a warm-up run of each (imports and
the default model are loaded once). `songfeat.analyze` is the peer: the ratios are analysis / analyze.

* a 30-s clip (the example clip): target analysis <= 2x analyze;
* a generated 5-minute song (drums, chords and a bass line in four parts, written as mp3): target
  analysis < 3 s;
* peak memory of a fresh process analysing the 30-s clip and the 5-minute song: resident (VmHWM)
  and the numpy/Python heap that tracemalloc sees (torch's own buffers are not traced).

    python benchmarks/bench_analysis.py [--repeat 3] [--clip examples/fma-000002.mp3]

`--repeat` defaults to 3; `--clip` (an audio file, default the example clip) replaces the 30-s clip. A clip no
decoder reads, or one too short or silent to analyse, is one error line before anything is timed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import benchutil  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "fma-000002.mp3"


def five_minute_song(path: Path) -> Path:
    """A 5-minute mp3: four 75-s parts (different keys, tempi near 120 BPM, with and without drums)."""
    import numpy as np
    import soundfile as sf

    from songfeat import synth

    parts = []
    for i, (key, mode, bpm, drums) in enumerate([(0, 1, 120.0, True), (9, 0, 120.0, False), (5, 1, 124.0, True), (7, 1, 120.0, True)]):
        seconds = 75.0
        y = synth.chord_progression(key, mode, seconds, chord_seconds=60.0 / bpm * 4, peak_dbfs=-12.0).astype(np.float64)
        if drums:
            y += synth.drum_pattern(bpm, synth.ROCK[0], seconds, peak_dbfs=-8.0, seed=i)
        parts.append(y)
    y = np.concatenate(parts)
    y = (0.9 * y / np.max(np.abs(y))).astype(np.float32)
    sf.write(path, np.stack([y, y], 1), 44100, format="MP3")
    return path


def clock(fn, path: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one fn(path); CPU time is what one core spends, whatever the load."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn(path)
    return time.perf_counter() - t0, time.process_time() - c0


def paired(fns: list, path: Path, repeat: int) -> list[tuple[float, float]]:
    """Median (wall, CPU) of each function, the functions taking turns in every round so they share the machine's load."""
    runs: list[list[tuple[float, float]]] = [[] for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            runs[i].append(clock(fn, path))
    return [(statistics.median(w for w, _ in r), statistics.median(c for _, c in r)) for r in runs]


def peak_memory_mb(path: Path) -> tuple[float, float]:
    """(peak resident MB, peak traced numpy/Python heap MB) of a fresh one-thread process analysing `path`.

    The resident peak is /proc's VmHWM, which starts afresh at exec (getrusage's ru_maxrss would
    carry over this parent's size through fork).
    """
    prog = ("import sys, tracemalloc; from songfeat.analysis import audio_analysis; tracemalloc.start(); "
            "audio_analysis(sys.argv[1]); heap = tracemalloc.get_traced_memory()[1]; "
            "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; print(hwm, heap)")
    out = subprocess.run([sys.executable, "-c", prog, str(path)], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    hwm_kb, heap = out.stdout.split()[-2:]
    return int(hwm_kb) / 1024, int(heap) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="paired rounds (default 3)")
    ap.add_argument("--clip", type=Path, default=EXAMPLE, help="the 30-s clip (default: the example clip)")
    args = ap.parse_args()
    benchutil.at_least_one(repeat=args.repeat)
    try:  # optional: neither function needs torch (the lean runtime); where installed, keep it to one thread
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    import songfeat
    from songfeat.analysis import audio_analysis

    with benchutil.one_line_errors():  # the warm-up: imports, filters, the default model; a clip that cannot be
        audio_analysis(args.clip)      # analysed stops here, in one line, before the 5-min song is made
        songfeat.analyze(args.clip)
    with tempfile.TemporaryDirectory() as tmp:
        song = five_minute_song(Path(tmp) / "five-minutes.mp3")
        rows = []
        for name, path in (("30-s clip", args.clip), ("5-min song", song)):
            t_an, t_aa = paired([songfeat.analyze, audio_analysis], path, args.repeat)
            rows.append((name, t_an, t_aa))
        mem = [(name, *peak_memory_mb(p)) for name, p in (("30-s clip", args.clip), ("5-min song", song))]

    print(f"one core (1 BLAS / torch thread), median of {args.repeat} paired runs, same process (warm); load average {os.getloadavg()[0]:.1f}")
    print(f"{'file':<12} {'analyze wall/CPU (s)':>22} {'analysis wall/CPU (s)':>23} {'ratio wall/CPU':>16}")
    for name, (w_an, c_an), (w_aa, c_aa) in rows:
        print(f"{name:<12} {w_an:>10.3f} / {c_an:<9.3f} {w_aa:>10.3f} / {c_aa:<10.3f} {w_aa / w_an:>6.2f}x / {c_aa / c_an:.2f}x")
    (_, (w_an, c_an), (w_aa, c_aa)), (_, _, (w5, c5)) = rows
    print(f"target: 30-s clip analysis <= 2x analyze: {w_aa / w_an:.2f}x wall, {c_aa / c_an:.2f}x CPU -> "
          f"{'met' if max(w_aa / w_an, c_aa / c_an) <= 2 else 'MISSED'}")
    print(f"target: 5-min song analysis < 3 s on one core: {w5:.2f} s wall, {c5:.2f} s CPU -> {'met' if c5 < 3 else 'MISSED'}"
          f"{'' if w5 < 3 else ' (wall time over 3 s: other processes share the cores)'}")
    for name, rss, heap in mem:
        print(f"peak memory, fresh process, analysis of the {name}: {rss:.0f} MB resident, {heap:.1f} MB traced numpy/Python heap")


if __name__ == "__main__":
    main()
