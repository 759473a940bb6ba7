"""Agreement of songfeat's measured descriptors with Spotify's own values on the dev previews.

    python scripts/evaluate_descriptors.py [--data ../shared/data/spotify-previews] [--limit N] [--json out.json] [--loso]

Prints tempo agreement (exact within 4%, and up to a factor 2), key / key+mode / mode agreement,
time-signature agreement (next to the always-4 baseline), loudness error in dB and time per file.
--loso also chooses the tempo octave weights without each labelled source in turn and scores them on it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from songfeat import descriptors as D

ROOT = Path(__file__).resolve().parents[1]


def loso_octave_weights(sources: list[Path]) -> dict:
    """Leave-one-source-out choice of the tempo octave weights (comb, onsets per beat) over D.OCTAVE_WEIGHT_GRID.

    A source is one value of the labels' `origin` column (the dev previews hold two, the extra previews one).
    For each source the pair with the most exact (4%) tempo hits on the others is chosen (ties: smaller
    weights) and scored on it.
    """
    import csv

    from songfeat.audio import iter_windows

    fps = D.SAMPLE_RATE / D.HOP
    rows = []
    for data in sources:
        with open(data / "labels.csv", newline="") as f:
            for r in csv.DictReader(f):
                path = data / "audio" / f"{r['track_id']}.mp3"
                if path.is_file():
                    env = np.concatenate([D.window_evidence(w).onset for w in iter_windows(path)]).astype(np.float64)
                    rows.append((r["origin"], float(r["tempo"]), env))
    hits = {w: np.array([D.tempo_agreement(D.estimate_tempo(e, fps, comb_weight=w[0], density_weight=w[1])[0], t)[0]
                         for _, t, e in rows]) for w in D.OCTAVE_WEIGHT_GRID}
    origin = np.array([o for o, _, _ in rows])
    out = {}
    for o in sorted(set(origin)):
        train = origin != o
        best = max(D.OCTAVE_WEIGHT_GRID, key=lambda w: (hits[w][train].sum(), -abs(w[0]) - abs(w[1])))
        out[o] = {"chosen": best, "n": int((~train).sum()), "held_out_exact": float(hits[best][~train].mean()),
                  "shipped_exact": float(hits[(D.OCTAVE_COMB_WEIGHT, D.OCTAVE_DENSITY_WEIGHT)][~train].mean())}
    return out


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
    ap.add_argument("--loso", action="store_true", help="choose the tempo octave weights without each source in turn "
                    "(the dev previews' two origins and ../spotify-previews-extra; decodes them again)")
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
    if args.loso:
        sources = [args.data] + [p for p in [args.data.parent / "spotify-previews-extra"] if (p / "labels.csv").is_file()]
        cv = loso_octave_weights(sources)
        for o, v in cv.items():
            print(f"tempo octave weights chosen without {o}: {v['chosen']}; exact on it {pct(v['held_out_exact'])} "
                  f"(n={v['n']}; shipped weights {pct(v['shipped_exact'])})")
        r["tempo_octave_loso"] = cv
    if args.json:
        args.json.write_text(json.dumps(r, indent=1, default=float))


if __name__ == "__main__":
    main()
