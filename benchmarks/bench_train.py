"""Training throughput of lstm-multitask on 20,000 generated 20x160 tensors: the engineered loop vs a seed-style loop.

    .venv/bin/python benchmarks/bench_train.py [--n 20000] [--epochs 1] [--batch 256] [--threads 2] [--baseline-batches 150]

Both loops train the same model (LSTM 20 -> 64, linear, sigmoid; SmoothL1; Adam) in the same process:

- baseline ("seed-style"): a per-epoch Python loop over `DataLoader(TensorDataset(x, y), batch_size=32,
  shuffle=True)`, as the seed's notebooks did; timed over its first `--baseline-batches` batches.
- engineered: `songfeat.train.fit` — tensors indexed with a seeded permutation, no DataLoader, a
  validation pass per epoch; timed over `--epochs` full epochs. Larger batches are *slower* on CPU for
  this small LSTM (measured: batch 64 about 0.8x, 256 about 0.7x of batch 32), so the default stays 32.

Prints samples/s for each, their ratio, and the projected wall time of the issue's target run
(20 epochs x 20,000 clips; target < 60 s on 2 CPU cores). `--epochs 20` runs the target for real.
Needs torch (the `bench` or `train` extra); without it, it stops with one line.
"""
from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

import benchutil

if TYPE_CHECKING:
    import torch

TARGET_EPOCHS, TARGET_N, TARGET_SECONDS = 20, 20000, 60.0


def seed_style(x: torch.Tensor, y: torch.Tensor, batches: int, seed: int = 0) -> float:
    """Samples/s of the seed's loop: DataLoader over a TensorDataset, batch 32, shuffle, Python loop."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from songfeat.models.lstm import LSTMMultitask

    torch.manual_seed(seed)
    model = LSTMMultitask(5)
    opt = torch.optim.Adam(model.parameters())
    crit = torch.nn.SmoothL1Loss()
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    model.train()
    seen, t0 = 0, time.perf_counter()
    for i, (xb, yb) in enumerate(loader):
        if i == batches:
            break
        opt.zero_grad()
        loss = crit(model(frontend=xb), yb)
        loss.backward()
        opt.step()
        seen += len(xb)
    return seen / (time.perf_counter() - t0)


def engineered(x: torch.Tensor, y: torch.Tensor, epochs: int, batch: int, seed: int = 0) -> tuple[float, dict]:
    """Samples/s of songfeat.train.fit (training samples only; its validation pass is included in the time)."""
    import torch

    from songfeat.models.lstm import LSTMMultitask
    from songfeat.train import fit

    torch.manual_seed(seed)
    model = LSTMMultitask(5)
    n_val = len(x) // 20
    t0 = time.perf_counter()
    rec = fit(model, (x[n_val:], None, y[n_val:]), (x[:n_val], None, y[:n_val]), loss="smoothl1", epochs=epochs,
              lr=1e-3, batch_size=batch, seed=seed, early_stop_patience=None, progress=False, device="cpu")
    secs = time.perf_counter() - t0
    return (len(x) - n_val) * epochs / secs, rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=TARGET_N, help=f"generated tensors (default {TARGET_N})")
    ap.add_argument("--epochs", type=int, default=1, help="engineered epochs to time (20 = the full target run)")
    ap.add_argument("--batch", type=int, default=32, help="32 is fastest on CPU for this LSTM (64: -20%%, 256: -30%%)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--baseline-batches", type=int, default=150,
                    help="batches of the seed-style loop to time (default 150)")
    a = ap.parse_args()
    benchutil.at_least_one(n=a.n, epochs=a.epochs, batch=a.batch, threads=a.threads, baseline_batches=a.baseline_batches)
    benchutil.require("torch")
    import torch

    from songfeat.data.synthetic import synthetic_tensors

    torch.set_num_threads(a.threads)
    xs, ys = synthetic_tensors(a.n, (20, 160), seed=0, n_targets=5)
    x, y = torch.from_numpy(xs), torch.from_numpy(ys)
    print(f"lstm-multitask, {a.n} x 20x160 tensors, torch {torch.__version__}, {torch.get_num_threads()} threads")
    base = seed_style(x, y, a.baseline_batches)
    print(f"baseline  seed-style DataLoader loop, batch 32 : {base:8.0f} samples/s  ({a.baseline_batches} batches)")
    eng, rec = engineered(x, y, a.epochs, a.batch)
    print(f"engineered songfeat.train.fit, batch {a.batch:<4d}      : {eng:8.0f} samples/s  ({a.epochs} epoch(s), "
          f"train loss {rec['history'][0]['train_loss']:.4f} -> {rec['history'][-1]['train_loss']:.4f})")
    print(f"ratio engineered / baseline: {eng / base:.2f}x")
    proj = TARGET_EPOCHS * TARGET_N / eng
    print(f"projected {TARGET_EPOCHS} epochs x {TARGET_N} clips: {proj:.0f} s "
          f"({'meets' if proj < TARGET_SECONDS else 'misses'} the {TARGET_SECONDS:.0f} s target); "
          f"seed-style: {TARGET_EPOCHS * TARGET_N / base:.0f} s")


if __name__ == "__main__":
    main()
