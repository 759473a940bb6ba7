"""Cost of the musicnn tagger per 30-s window on ONE thread: front-end, each model, and `describe` end to end.

Peers, run in the same process on the same windows:
  * front-end: songfeat's numpy log-mel (what analysis runs) against musicnn's own recipe in librosa
    (librosa.resample soxr_hq + librosa.feature.melspectrogram);
  * models: songfeat's torch port of each model (the reference the shipped ONNX files are exported from),
    fused, against the same torch weights run layer by layer in musicnn's graph order (ReLU -> batch norm ->
    max over frequency on the full map), which songfeat fuses into one convolution and one max-pool.
`describe` end to end runs the shipped path (numpy front-end, ONNX models in onnxruntime). Ratios are in CPU time.

    python benchmarks/bench_tagger.py [--windows N] [--patches P] [--threads T] [--audio DIR [--drift M]]

Audio: N different generated 30-s windows at 44.1 kHz (chords, clicks and noise), or with --audio the
first 30 s of the first N audio files in DIR (searched recursively). With --audio it also prints, over up
to M files, how far the patch-averaged tags move when fewer patches are read (the price of a cheaper tagger).
`--threads` sets torch's, onnxruntime's and numpy's BLAS threads alike. Needs the `bench` extra (torch, librosa).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import benchutil


def windows(n: int, sr: int = 44100) -> list[np.ndarray]:
    t = np.arange(30 * sr) / sr
    out = []
    for i in range(n):
        rng = np.random.default_rng(i)
        bpm = 80 + 13 * i
        y = 0.2 * sum(np.sin(2 * np.pi * f * (1 + 0.01 * i) * t) for f in (220.0, 277.2, 329.6))
        y += 0.5 * (np.mod(t, 60 / bpm) < 0.02) * rng.standard_normal(t.size)
        out.append((y / np.abs(y).max() * 0.7).astype(np.float32))
    return out


def timed(f, reps: int) -> tuple[float, float]:
    """Median wall-clock and CPU seconds of `reps` calls (after one untimed warm-up).

    CPU time is the fairer figure on a shared machine: other jobs stretch the wall clock, not it.
    """
    f()
    wall, cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        f()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def layer_by_layer(h, conv, bn, h_max: float | None = None):
    """musicnn's own graph order for one front-end branch: bn(relu(conv(h))), then the max over frequency on the
    full map (`h_max`, the ONNX export's bound, does not apply: nothing is left out here)."""
    import torch

    return bn(torch.nn.functional.relu(conv(h))).amax(dim=3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=3, help="30-s windows to time (default 3)")
    ap.add_argument("--patches", type=int, default=10, help="at most this many 3-s patches per window (default 10)")
    ap.add_argument("--threads", type=int, default=1, help="torch, onnxruntime and BLAS threads (default 1)")
    ap.add_argument("--audio", type=str, default=None, help="a folder of real audio to time (and check patch budgets) on")
    ap.add_argument("--drift", type=int, default=20, help="files (from --audio) for the fewer-patches comparison")
    args = ap.parse_args()
    benchutil.at_least_one(windows=args.windows, patches=args.patches, threads=args.threads, drift=args.drift)
    benchutil.require("torch", "librosa")
    import torch

    from songfeat import runtime

    runtime.set_threads(args.threads)  # the ONNX sessions `describe` runs and numpy's BLAS, not only torch
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    from songfeat import tagger
    from songfeat.models import musicnn as mm

    for m in tagger.MODELS:
        tagger.load_model(m)
    cold = time.perf_counter() - t0
    sr = 44100
    if args.audio:
        from songfeat.audio import find_audio, load_audio

        files = find_audio([args.audio])[0]
        if not files:
            raise benchutil.fail(f"{args.audio}: no audio files found")
        with benchutil.one_line_errors():
            real = [load_audio(f, sr=sr, max_seconds=30.0) for f in files[: max(args.windows, args.drift)]]
        ws = real[: args.windows]
    else:
        ws = windows(args.windows)

    def fe_songfeat():
        return [tagger.mel_patches(w, sr, args.patches) for w in ws]

    def fe_librosa():
        import librosa

        for w in ws:
            y16 = librosa.resample(w, orig_sr=sr, target_sr=16000, res_type="soxr_hq")
            m = librosa.feature.melspectrogram(y=y16, sr=16000, n_fft=512, hop_length=256, n_mels=96, pad_mode="reflect")
            np.log10(10000 * m.astype(np.float32) + 1)

    patches = [torch.from_numpy(p) for p in fe_songfeat()]

    def model(name: str):
        net = tagger.load_model(name)

        def run():
            with torch.inference_mode():
                for p in patches:
                    net(p)
        return run

    fused = mm.conv_relu_bn_max

    def unfused(name: str):
        run = model(name)

        def go():
            mm.conv_relu_bn_max = layer_by_layer
            try:
                run()
            finally:
                mm.conv_relu_bn_max = fused
        return go

    def describe():
        for w in ws:
            tagger.describe(w, sr, args.patches)

    reps = 3
    n = len(ws)
    def per_window(f) -> tuple[float, float]:
        w, c = timed(f, reps)
        return w / n, c / n

    rows = [("front-end (songfeat, numpy)", per_window(fe_songfeat)),
            ("front-end (librosa, musicnn's recipe)", per_window(fe_librosa))]
    for name in tagger.MODELS:
        rows.append((f"{name.upper()} model (torch port, fused)", per_window(model(name))))
        rows.append((f"{name.upper()} model (torch, layer by layer)", per_window(unfused(name))))
    rows.append(("describe(): front-end + both models (ONNX)", per_window(describe)))
    total = rows[-1][1][1]
    per = np.mean([len(p) for p in patches])
    print(f"musicnn tagger, at most {args.patches} patches per window (mean {per:.1f}), {args.threads} thread(s), "
          f"{n} windows, median of {reps}")
    print(f"cold start (import + load both models): {cold:.2f} s")
    print(f"  {'':<42} {'wall ms':>9} {'CPU ms':>9}  per window")
    for label, (w, c) in rows:
        print(f"  {label:<42} {w * 1000:9.1f} {c * 1000:9.1f}")
    cpu = [c for _, (_, c) in rows]
    fe_ratio = cpu[1] / cpu[0]
    m_ratio = (cpu[3] + cpu[5]) / (cpu[2] + cpu[4])
    print(f"front-end: {fe_ratio:.2f}x the speed of librosa's; models: {m_ratio:.2f}x the layer-by-layer graph; "
          f"describe: {np.mean([w.size for w in ws]) / sr / total:.1f}x real time (ratios in CPU time)")
    if args.audio:
        real = real[: args.drift]
        full = [tagger.describe(w, sr, 10) for w in real]
        print(f"tag drift with fewer patches, {len(real)} files of {args.audio}:")
        for p in (5, 3, 1):
            fewer = [tagger.describe(w, sr, p) for w in real]
            diff = np.mean([np.abs(np.r_[a["msd_tags"], a["mtt_tags"]] - np.r_[b["msd_tags"], b["mtt_tags"]]).max()
                            for a, b in zip(full, fewer)])
            same_top = np.mean([tagger.top_tags(a, 1)[m][0][0] == tagger.top_tags(b, 1)[m][0][0]
                                for a, b in zip(full, fewer) for m in tagger.MODELS])
            print(f"  {p:2d} patches instead of 10: mean over windows of the largest tag change {diff:.3f}; "
                  f"same top tag {same_top:.0%}")


if __name__ == "__main__":
    main()
