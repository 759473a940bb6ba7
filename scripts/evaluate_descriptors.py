"""Agreement of songfeat's measured descriptors with Spotify's own values on the dev previews.

    python scripts/evaluate_descriptors.py [--data ../shared/data/spotify-previews] [--limit N] [--json out.json] [--cv-prior]

Prints tempo agreement (exact within 4%, and up to a factor 2), key / key+mode / mode agreement,
time-signature agreement (next to the always-4 baseline), loudness error in dB and time per file.
--cv-prior also cross-validates the tempo prior's centre and width (5-fold) on the previews.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from songfeat import descriptors as D

ROOT = Path(__file__).resolve().parents[1]
PRIOR_GRID = [(c, s) for c in (100.0, 110.0, 115.0, 120.0, 130.0, 140.0, 150.0) for s in (0.375, 0.5, 0.75, 1.0)]


def cv_tempo_prior(data: Path, k: int = 5, seed: int = 0) -> dict:
    """Pick the tempo prior (centre, octaves) on k-1 folds, score exact agreement on the held-out fold."""
    import csv

    from songfeat.audio import iter_windows

    with open(data / "labels.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if (data / "audio" / f"{r['track_id']}.mp3").is_file()]
    fps = D.SAMPLE_RATE / D.HOP
    envs = [np.concatenate([D.window_evidence(w).onset for w in iter_windows(data / "audio" / f"{r['track_id']}.mp3")]).astype(np.float64) for r in rows]
    ref = np.array([float(r["tempo"]) for r in rows])
    saved = D.TEMPO_PRIOR_BPM, D.TEMPO_PRIOR_OCTAVES
    hits = {}
    try:
        for c, s in PRIOR_GRID:
            D.TEMPO_PRIOR_BPM, D.TEMPO_PRIOR_OCTAVES = c, s
            hits[(c, s)] = np.array([D.tempo_agreement(D.estimate_tempo(e, fps)[0], t)[0] for e, t in zip(envs, ref)])
    finally:
        D.TEMPO_PRIOR_BPM, D.TEMPO_PRIOR_OCTAVES = saved
    order = np.random.default_rng(seed).permutation(len(rows))
    folds = np.array_split(order, k)
    held, chosen = [], []
    for f in folds:
        train = np.setdiff1d(order, f)
        best = max(PRIOR_GRID, key=lambda g: (hits[g][train].mean(), -abs(np.log2(g[0] / 115.0))))  # ties: nearer the catalogue
        chosen.append(best)
        held.append(float(hits[best][f].mean()))
    full = max(PRIOR_GRID, key=lambda g: (hits[g].mean(), -abs(np.log2(g[0] / 115.0))))
    return {"cv_tempo_exact": float(np.mean(held)), "fold_exact": held, "chosen_per_fold": chosen, "chosen_on_all": full,
            "exact_by_prior": {f"{c:g}/{s:g}": float(h.mean()) for (c, s), h in hits.items()}}


def window_cost_ms(repeats: int = 7) -> dict:
    """Median milliseconds of window_evidence on a 30-s window and of combine on one, excluding decode."""
    import time

    from songfeat import synth

    y = synth.chord_progression(0, 1, 30.0) + 0.3 * synth.click_track(120.0, 30.0)
    D.combine([D.window_evidence(y)])  # warm-up: caches filters
    ev_t, comb_t = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ev = D.window_evidence(y)
        t1 = time.perf_counter()
        D.combine([ev])
        comb_t.append(time.perf_counter() - t1)
        ev_t.append(t1 - t0)
    return {"window_evidence_ms": 1000 * float(np.median(ev_t)), "combine_ms": 1000 * float(np.median(comb_t))}


def main() -> None:
    """Run the evaluation and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "spotify-previews")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write every per-track result here")
    ap.add_argument("--cv-prior", action="store_true", help="cross-validate the tempo prior (decodes the previews again)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    r = D.evaluate_descriptors(args.data / "labels.csv", args.data / "audio", limit=args.limit)
    pct = lambda x: f"{100 * x:5.1f}%"  # noqa: E731
    print(f"previews: {r['n']}")
    print(f"tempo   exact (within 4%)        {pct(r['tempo_exact'])}")
    print(f"tempo   up to x2 / x0.5 (4%)     {pct(r['tempo_octave'])}")
    print(f"tempo   exact or an alternative  {pct(r['tempo_exact_or_alternative'])}")
    print(f"key     exact                    {pct(r['key_exact'])}")
    print(f"key     + mode                   {pct(r['key_and_mode'])}")
    print(f"mode                             {pct(r['mode'])}")
    print(f"time signature                   {pct(r['time_signature'])}   (always-4 baseline {pct(r['time_signature_always_4'])})")
    print(f"loudness MAE (current constants) {r['loudness_mae_db']:.2f} dB   (in-sample: the constants were fitted on these previews)")
    if "loudness_fit" in r:
        fit = r["loudness_fit"]
        print(f"loudness {fit['k']}-fold CV MAE         {fit['cv_mae_db']:.2f} dB   (folds: {', '.join(f'{m:.2f}' for m in fit['fold_mae_db'])})")
    print(f"time per file (decode + measure) median {1000 * r['seconds_per_file_median']:.0f} ms")
    cost = window_cost_ms()
    r["cost"] = cost
    print(f"per 30-s window: window_evidence {cost['window_evidence_ms']:.0f} ms, combine {cost['combine_ms']:.0f} ms (1 thread, excl. decode)")
    if args.cv_prior:
        cv = cv_tempo_prior(args.data)
        print(f"tempo prior 5-fold CV exact     {pct(cv['cv_tempo_exact'])}   chosen per fold {cv['chosen_per_fold']}, on all {cv['chosen_on_all']}")
        for g, v in cv["exact_by_prior"].items():
            print(f"    prior {g:>9}: exact {pct(v)}")
        r["tempo_prior_cv"] = cv
    if args.json:
        args.json.write_text(json.dumps(r, indent=1, default=float))


if __name__ == "__main__":
    main()
