"""Ray's overhead: the same files through the local process pool and through `songfeat.distributed` on a local Ray cluster.

Both run in this process on the same N files with as many workers as CPUs: the local engine is
`analyze_many(workers=CPUS)` (worker start-up included), the Ray engine is `analyze_to_parquet`
(actor start-up, model load per actor, Parquet write and manifest included; the cluster itself is
started once beforehand, as it is on a real cluster). The runs are interleaved and repeated, and
the best of each is compared: on a machine shared with other jobs the least disturbed run is the
fairest estimate of each engine's own cost. The local pool's first run also starts its fork server
(imports the analysis modules and the listening model's runtime once); later runs fork warm workers from it, so it is
shown apart. Every Ray job starts its actors afresh, so Ray's times include that start-up. The ratios are against
the best warm local run (with `--repeat 1` there is none: against the cold one, and the table says so).

    python benchmarks/bench_distributed.py [--files 100] [--audio DIR] [--batch-sizes 1,4,16] [--repeat 3]

Audio: the first N mp3 files of `--audio DIR`, else of the dev previews (30-s mp3) in
../shared/data/spotify-previews/audio when present, else N generated 30-s clips. Needs the `ray` extra; without it,
or with a folder without mp3 files or an mp3 no decoder reads, it stops with one line.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import benchutil  # noqa: E402


def local_run(files: list[Path], cpus: int) -> tuple[float, int]:
    """Wall seconds of the local pool over `files`, and how many failed."""
    from songfeat.analyze import analyze_many

    t0 = time.perf_counter()
    failed = sum(1 for o in analyze_many(files, workers=cpus) if o.error)
    return time.perf_counter() - t0, failed


def ray_run(files: list[Path], out: Path, batch_size: int, cpus: int) -> tuple[float, int]:
    """Wall seconds of the Ray job over `files` into `out`, and how many error rows it wrote."""
    from songfeat import distributed

    t0 = time.perf_counter()
    report = distributed.analyze_to_parquet([str(f) for f in files], out, batch_size=batch_size, concurrency=cpus)
    return time.perf_counter() - t0, len(report.errors)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100, help="clips to analyse (default 100)")
    ap.add_argument("--audio", type=Path, default=None, help="a folder of mp3 files (default: the dev previews, else generated clips)")
    ap.add_argument("--batch-sizes", default="1,4,16", help="comma-separated Ray batch sizes (default 1,4,16)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of every run, interleaved; the best of each is reported")
    args = ap.parse_args()
    benchutil.at_least_one(files=args.files, repeat=args.repeat)
    try:
        sizes = [int(x) for x in args.batch_sizes.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise benchutil.fail(f"--batch-sizes takes whole numbers of at least 1, comma-separated, not {args.batch_sizes!r}")
    benchutil.require("ray")
    import ray

    from bench_analyze import bench_files
    from songfeat import distributed

    cpus = len(os.sched_getaffinity(0))
    tmp = Path(tempfile.mkdtemp(prefix="songfeat-bench-ray-"))
    try:
        files, label = bench_files(args.audio, args.files, tmp)
        print(f"songfeat distributed benchmark: {label}; {cpus} CPUs; load average before: {os.getloadavg()[0]:.1f}")
        t0 = time.perf_counter()
        distributed.init(num_cpus=cpus)
        print(f"ray.init (local cluster start, not counted below): {time.perf_counter() - t0:.1f} s")
        times: dict[str, list[float]] = {"local pool": []} | {f"ray, batch size {b}": [] for b in sizes}
        failed: dict[str, int] = {}
        for r in range(args.repeat):  # interleaved, so a burst of load from other jobs hits every engine alike
            sec, failed["local pool"] = local_run(files, cpus)
            times["local pool"].append(sec)
            for b in sizes:
                sec, failed[f"ray, batch size {b}"] = ray_run(files, tmp / f"out-{r}-b{b}", b, cpus)
                times[f"ray, batch size {b}"].append(sec)
        n = len(files)
        # the local pool's first run also starts its fork server (torch imported once); later runs fork from it warm,
        # while every Ray job starts its actors afresh: both are shown, the ratio is against the warm pool
        local = times.pop("local pool")
        rows = [("local pool, cold (1st run)", [local[0]])] + ([("local pool, warm (best of rest)", local[1:])] if len(local) > 1 else [])
        rows += list(times.items())
        base = min(local[1:] or local)
        vs = "vs warm local" if len(local) > 1 else "vs cold local"  # --repeat 1: no warm run to compare with
        print(f"{'run':32s} {'best s':>8s} {'all runs':>16s} {'tracks/s':>9s} {'tracks/s/core':>14s} {vs:>14s}")
        for name, ts in rows:
            sec = min(ts)
            runs = "/".join(f"{t:.1f}" for t in ts)
            print(f"{name:32s} {sec:8.2f} {runs:>16s} {n / sec:9.2f} {n / sec / cpus:14.3f} {sec / base:13.2f}x")
        print(f"failed: {failed}; ratio = best time / best {vs.split()[1]} local time (1.25x = 25% overhead); "
              f"load average after: {os.getloadavg()[0]:.1f}")
        ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
