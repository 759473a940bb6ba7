"""Fit Spotify's loudness (dB) against BS.1770 integrated loudness (LUFS) on the dev previews.

    python scripts/calibrate_loudness.py [--data ../shared/data/spotify-previews] [--folds 5]

Prints the k-fold cross-validated mean absolute error (per fold and mean) and the slope/intercept
fitted on all previews, to paste into LOUDNESS_SLOPE / LOUDNESS_INTERCEPT in songfeat/descriptors.py.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from songfeat.descriptors import fit_loudness, measure_previews

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Measure every preview's LUFS, cross-validate a linear map to Spotify's dB, print the constants."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "spotify-previews")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    meas = measure_previews(args.data / "labels.csv", args.data / "audio")
    lufs = np.array([d.loudness_lufs for _, d, _ in meas])
    spot = np.array([float(r["loudness"]) for r, _, _ in meas])
    fit = fit_loudness(lufs, spot, k=args.folds, seed=args.seed)
    print(f"previews: {fit['n']}   LUFS range {lufs.min():.1f}..{lufs.max():.1f}   Spotify dB range {spot.min():.1f}..{spot.max():.1f}")
    print(f"Pearson r (LUFS, Spotify dB): {fit['pearson_r']:.3f}")
    for i, m in enumerate(fit["fold_mae_db"], 1):
        print(f"fold {i}: MAE {m:.3f} dB")
    print(f"{fit['k']}-fold CV MAE, linear: {fit['cv_mae_db']:.3f} dB   (offset only, slope 1: {fit['cv_mae_db_offset_only']:.3f} dB)")
    print(f"no calibration (Spotify dB = LUFS): MAE {np.mean(np.abs(lufs - spot)):.3f} dB")
    origins = np.array([r["origin"] for r, _, _ in meas])
    for o in sorted(set(origins)):
        tr, te = origins != o, origins == o
        a, b = np.polyfit(lufs[tr], spot[tr], 1)
        off = float(np.mean(spot[tr] - lufs[tr]))
        print(f"fitted without {o}: MAE on it {np.mean(np.abs(lufs[te] + off - spot[te])):.3f} dB with slope 1 "
              f"(offset {off:.3f}), {np.mean(np.abs(a * lufs[te] + b - spot[te])):.3f} dB with a fitted line")
    print("constants (fitted on all previews; the slope is 1 by physics: a gain of g dB moves both scales by g dB):")
    print("LOUDNESS_SLOPE = 1.0")
    print(f"LOUDNESS_INTERCEPT = {fit['offset']:.4f}   (a fitted line would be {fit['slope']:.4f} x LUFS + {fit['intercept']:.4f})")


if __name__ == "__main__":
    main()
