"""Where the ONNX musicnn tagger's time goes, node by node, on one thread, and how near a core's peak it runs.

    python benchmarks/profile_tagger.py [--model msd|mtt] [--runs 30] [--top 12] [--int8]

Runs one 3-s patch through the shipped ONNX model `--runs` times with onnxruntime's profiler on, as
`songfeat.tagger.run_patches` does (one patch per call), and prints the mean time of the `--top` slowest nodes with
the convolutions' arithmetic rate (2 x multiply-adds / time, shapes from the profile). The peer, in the same process
and on the same thread: numpy's float32 matrix product (OpenBLAS sgemm, 1 thread) on square matrices, the rate a
well-tuned kernel reaches on this core. A convolution at that rate can only get cheaper by doing less arithmetic
(fewer patches, fewer filters, lower precision), not by a better kernel; the shipped graphs already leave out the
filters training left dead (docs/musicnn.md).

`--int8` tries the lower precision: onnxruntime's static quantizer (needs the `onnx` package, in the train extra) turns
the convolutions into 8-bit ones (QDQ and QOperator forms, per-channel int8 weights, uint8 activations calibrated on
patches of generated music from `songfeat.synth`), and the float and 8-bit models are timed on the same patches, one at
a time on one thread, with the largest and mean tag differences.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import benchutil  # noqa: E402
from songfeat import runtime  # noqa: E402


def sgemm_gflops(n: int = 1024, reps: int = 20) -> float:
    """Best-of-`reps` float32 n x n matrix product rate, in GFLOP/s."""
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    a @ a
    best = min(_time(lambda: a @ a) for _ in range(reps))
    return 2 * n**3 / best / 1e9


def _time(f) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def conv_macs(args: dict) -> int:
    """Multiply-adds of a Conv/FusedConv node from its profiled shapes: output elements x weight elements per output."""
    (out,) = (next(iter(s.values())) for s in args["output_type_shape"][:1])
    weight = next(iter(args["input_type_shape"][1].values()))
    return int(np.prod(out)) * int(np.prod(weight[1:]))


def profile(model: Path, runs: int) -> tuple[dict, float]:
    """{(op, node): (mean µs per call, multiply-adds)} over `runs` one-patch calls, and the mean wall ms per call."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = runtime.session_options(1)  # what songfeat.tagger's sessions run with in a batch worker
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "tagger")
        sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        x = np.random.default_rng(1).random((1, 187, 96), dtype=np.float32) * 3
        for _ in range(3):  # first runs page in the arena: not what a steady stream of patches costs
            sess.run(None, {inp.name: x})
        t = time.perf_counter()
        for _ in range(runs):
            sess.run(None, {inp.name: x})
        wall = (time.perf_counter() - t) / runs * 1000
        events = json.loads(Path(sess.end_profiling()).read_text())
    durations: dict = defaultdict(list)
    macs: dict = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        key = (e["args"]["op_name"], e["name"][: -len("_kernel_time")])
        durations[key].append(e["dur"])
        if key[0] in ("Conv", "FusedConv"):
            macs[key] = conv_macs(e["args"])
    # the timed calls only (the warm-up calls were profiled too)
    return {k: (float(np.mean(d[-runs:])), macs.get(k, 0)) for k, d in durations.items()}, wall


def synth_patches(n_clips: int, seed: int) -> np.ndarray:
    """Log-mel patches [P, 187, 96] of `n_clips` generated 30-s clips: chord progressions over drum patterns."""
    from songfeat import synth
    from songfeat.musicnn_frontend import mel_patches

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_clips):
        bpm = float(rng.uniform(70, 170))
        y = synth.chord_progression(int(rng.integers(12)), int(rng.integers(2)), 30.0, chord_seconds=60.0 / bpm * 4)
        y = y + synth.drum_pattern(bpm, seconds=30.0, seed=int(rng.integers(1 << 30)))[: y.size]
        out.append(mel_patches(y.astype(np.float32), synth.SR, 5))
    return np.concatenate(out)


def int8_trial(model: Path) -> None:
    """Time the float model against 8-bit quantized copies (QDQ and QOperator) on generated patches; print tag drift."""
    import onnxruntime as ort

    benchutil.require("onnx", why="--int8 quantizes with onnxruntime's quantizer, which imports it")
    try:
        from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                              quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as e:
        raise benchutil.fail(f"--int8: onnxruntime's quantizer cannot be imported ({e})") from None

    calib, test = synth_patches(6, seed=0), synth_patches(6, seed=1)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.i = 0

        def get_next(self) -> dict | None:
            self.i += 1
            return {"patches": calib[self.i - 1: self.i]} if self.i <= len(calib) else None

    def run(sess: ort.InferenceSession) -> tuple[np.ndarray, float]:
        tags = [sess.run(["tags"], {"patches": test[i: i + 1]})[0] for i in range(len(test))]  # warm-up pass
        t = time.perf_counter()
        for i in range(len(test)):
            sess.run(["tags"], {"patches": test[i: i + 1]})
        return np.concatenate(tags), (time.perf_counter() - t) / len(test) * 1000

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(model), str(pre))
        ref, ms = run(ort.InferenceSession(str(model), runtime.session_options(1), providers=["CPUExecutionProvider"]))
        print(f"{model.name}, {len(test)} generated patches one at a time, 1 thread: float32 {ms:.1f} ms a patch")
        for fmt in (QuantFormat.QDQ, QuantFormat.QOperator):
            out = Path(tmp) / f"{fmt.name}.onnx"
            quantize_static(str(pre), str(out), Reader(), quant_format=fmt, op_types_to_quantize=["Conv"],
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
            tags, ms8 = run(ort.InferenceSession(str(out), runtime.session_options(1),
                                                 providers=["CPUExecutionProvider"]))
            d = np.abs(tags - ref)
            print(f"  int8 {fmt.name}: {ms8:.1f} ms a patch ({ms / ms8:.2f}x float32's speed); tag difference "
                  f"max {d.max():.3f}, mean {d.mean():.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("msd", "mtt"), default="msd")
    ap.add_argument("--runs", type=int, default=30, help="timed one-patch calls (default 30)")
    ap.add_argument("--top", type=int, default=12, help="how many of the slowest nodes to list (default 12)")
    ap.add_argument("--int8", action="store_true", help="time 8-bit quantized copies of the model instead")
    args = ap.parse_args()
    benchutil.at_least_one(runs=args.runs, top=args.top)
    from songfeat import tagger

    path = tagger.WEIGHTS_DIR / tagger.ONNX_FILES[args.model]
    if args.int8:
        int8_trial(path)
        return
    nodes, wall = profile(path, args.runs)
    peak = sgemm_gflops()
    total = sum(us for us, _ in nodes.values()) / 1000
    print(f"{path.name}: one 3-s patch, 1 thread, mean of {args.runs} calls: {wall:.2f} ms wall, "
          f"{total:.2f} ms inside nodes")
    print(f"peer: numpy float32 matmul (OpenBLAS sgemm, 1 thread, 1024^3): {peak:.0f} GFLOP/s")
    print(f"  {'node':<44} {'op':<10} {'ms':>6} {'share':>6} {'GFLOP/s':>8} {'vs sgemm':>8}")
    for (op, name), (us, macs) in sorted(nodes.items(), key=lambda kv: -kv[1][0])[: args.top]:
        ms = us / 1000
        rate = f"{2 * macs / (ms / 1000) / 1e9:8.0f} {2 * macs / (ms / 1000) / 1e9 / peak:7.2f}x" if macs else ""
        print(f"  {name[-44:]:<44} {op:<10} {ms:6.2f} {ms / total:6.0%} {rate}")
    conv = [(us, macs) for (op, _), (us, macs) in nodes.items() if macs]
    cms, cmacs = sum(u for u, _ in conv) / 1000, sum(m for _, m in conv)
    print(f"all convolutions: {cms:.2f} ms ({cms / total:.0%} of the nodes' time), {2 * cmacs / 1e9:.2f} GFLOP, "
          f"{2 * cmacs / (cms / 1000) / 1e9:.0f} GFLOP/s = {2 * cmacs / (cms / 1000) / 1e9 / peak:.2f}x sgemm's rate")


if __name__ == "__main__":
    main()
