"""Fit Spotify's loudness (dB) against songfeat's level on the dev previews, and check the map across sources.

    python scripts/calibrate_loudness.py [--data ../shared/data/spotify-previews] [--extra ../shared/data/spotify-previews-extra]

The level is Echo Nest's recipe (`descriptors.segment_level`: the mean of 0.25-s segments' loudest 23-ms
frame, K-weighted); BS.1770 LUFS, the level shipped before it, is shown beside it. For each: k-fold CV on
all dev previews, each dev origin checked with the offset fitted on the others, and the extra previews
checked with the offset fitted on all dev previews. Prints LOUDNESS_INTERCEPT for songfeat/descriptors.py.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from songfeat.descriptors import fit_loudness, loudness_map, measure_previews

ROOT = Path(__file__).resolve().parents[1]
MEASURES = (("level", "loudness_level"), ("LUFS", "loudness_lufs"))


def main() -> None:
    """Measure every preview, cross-validate the offset map to Spotify's dB for each measure, print the constant."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "spotify-previews")
    ap.add_argument("--extra", type=Path, default=ROOT.parent / "shared" / "data" / "spotify-previews-extra")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    meas = measure_previews(args.data / "labels.csv", args.data / "audio")
    extra = measure_previews(args.extra / "labels.csv", args.extra / "audio") if (args.extra / "labels.csv").is_file() else []
    spot = np.array([float(r["loudness"]) for r, _, _ in meas])
    origins = np.array([r["origin"] for r, _, _ in meas])
    spot_x = np.array([float(r["loudness"]) for r, _, _ in extra])
    for label, field in MEASURES:
        x = np.array([getattr(d, field) for _, d, _ in meas])
        fit = fit_loudness(x, spot, k=args.folds, seed=args.seed)
        print(f"\n{label}: {fit['n']} dev previews, range {x.min():.1f}..{x.max():.1f}; Spotify dB {spot.min():.1f}..{spot.max():.1f}; "
              f"Pearson r {fit['pearson_r']:.3f}")
        print(f"  {fit['k']}-fold CV MAE: offset only (slope 1) {fit['cv_mae_db_offset_only']:.3f} dB, fitted line {fit['cv_mae_db']:.3f} dB")
        for o in sorted(set(origins)):
            tr, te = origins != o, origins == o
            _, off = loudness_map(x[tr], spot[tr])
            print(f"  fitted without {o}: MAE on it {np.mean(np.abs(x[te] + off - spot[te])):.3f} dB (offset {off:.3f})")
        if extra:
            xx = np.array([getattr(d, field) for _, d, _ in extra])
            print(f"  fitted on all dev previews, checked on the {len(extra)} extra previews: "
                  f"MAE {np.mean(np.abs(xx + fit['offset'] - spot_x)):.3f} dB")
        print(f"  offset (fitted on all dev previews): {fit['offset']:.4f}")
    _, offset = loudness_map(np.array([d.loudness_level for _, d, _ in meas]), spot)
    print("\nconstants for songfeat/descriptors.py (the slope is 1 by physics: a gain of g dB moves both scales by g dB):")
    print("LOUDNESS_SLOPE = 1.0")
    print(f"LOUDNESS_INTERCEPT = {offset:.4f}")


if __name__ == "__main__":
    main()
