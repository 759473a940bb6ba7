"""Does correcting the heads' fit for the previews' label skew help on music distributed like Spotify's catalogue?

    python scripts/try_label_shift.py [--shared ../shared/data] [--cache DIR] [--features valence,energy,...] [--clip 5]
                                      [--stretch | --chain]

The labelled previews are louder and happier than Spotify's catalogue (mean energy 0.75 against 0.54, valence 0.73
against 0.50), so heads fitted on them regress towards an energetic, happy centre: on held-out previews the lowest
third of valence reads +0.15 high and the highest third -0.18 low. This script

1. scores the shipped recipe's nested leave-one-source-out predictions (`sources.evaluate_sources`) two ways: plain
   MAE, and **catalogue-weighted** MAE, where each held-out clip counts, per feature, as much as its label's fifth of
   the 0-1 scale is more common in the 41,855-track table than among the 138 labelled previews (weights clipped to
   1/`clip`..`clip`): an estimate of the error on music spread like the catalogue, e.g. calm and sad playlists;
2. refits the heads with the same ratio (computed on each training fold's own labels) as per-feature loss weights
   (label-shift importance weighting; `heads.fit_heads(feature_weights=...)`) and scores them the same two ways;
3. prints, for both, the bias in the lowest and highest third of each feature's labels.

With `--stretch`, step 2 is replaced by a post-hoc check: the shipped held-out predictions of `--features` pulled
away from their fold's centre by x1.25, x1.5 and x2 (undoing part of the regression towards the previews' centre),
the factor for each source chosen by plain MAE on the other two preview sources.

With `--chain`, step 2 is replaced by the catalogue's own relations between features: for each of `--features`, a
gradient-boosted regressor (absolute loss) fitted on the 41,855-track table (labelled clips removed) maps the other six
learned features to it, and is applied to the shipped held-out predictions of those six; the output is
(1 - w) x shipped + w x chained, w picked for each source on the other two preview sources. Also printed: the chain on
the held-out clips' *true* other features, the best it could do.

Nothing here changes songfeat; docs/accuracy-notes.md quotes its output.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from songfeat import sources
from songfeat.heads import TARGETS
from songfeat.records import DEFAULT_CACHE

ROOT = Path(__file__).resolve().parents[1]
EDGES = np.linspace(0.0, 1.0, 6)  # fifths of the 0-1 scale
SHIFTED = ("danceability", "energy", "acousticness", "valence", "liveness")  # labels span the scale: a ratio exists


def shares(y: np.ndarray) -> np.ndarray:
    """Share of values in each fifth of the scale."""
    y = y[np.isfinite(y)]
    return np.histogram(y, EDGES)[0] / max(len(y), 1)


def ratio_weights(y: np.ndarray, target: np.ndarray, source: np.ndarray, clip: float) -> np.ndarray:
    """Per value of `y`: target share / source share of its fifth, clipped to [1/clip, clip] (NaN -> 1)."""
    r = np.clip(target / np.maximum(source, 1e-9), 1.0 / clip, clip)
    out = np.ones(len(y))
    ok = np.isfinite(y)
    out[ok] = r[np.clip(np.digitize(y[ok], EDGES[1:-1]), 0, len(EDGES) - 2)]
    return out


def weighted_fit_on(catalogue: dict, feats: tuple[str, ...], clip: float):
    """`sources.fit_on` with label-shift weights: each point-labelled clip's loss, per feature in `feats`, times the
    catalogue/training-fold share ratio of its label's fifth (normalised to mean 1); bound rows keep weight 1."""
    plain = sources.fit_on

    def fit_on(bundle, records, lo, hi, lay, numeric_std, cfg):
        fw = np.ones(lo.shape, dtype=np.float64)
        for t in feats:
            j = TARGETS.index(t)
            point = hi[:, j] == lo[:, j]
            y = lo[point, j].astype(np.float64)
            w = ratio_weights(y, catalogue[t], shares(y), clip)
            fw[point, j] = w / w.mean()
        return plain(bundle, records, lo, hi, lay, numeric_std, cfg, feature_weights=fw)
    return fit_on


def report(name: str, res: dict, catalogue: dict, pooled: np.ndarray, clip: float) -> None:
    """Plain and catalogue-weighted MAE per held-out preview source, and the bias in each feature's outer thirds."""
    previews = [s for s in res["sources"] if s != "fma"]
    print(f"\n{name}: average MAE over the seven features, plain | catalogue-weighted")
    for s in previews:
        e = res["sources"][s]
        y = np.array(e["labels"])
        w = np.stack([ratio_weights(y[:, j], catalogue[t], pooled[j], clip) for j, t in enumerate(TARGETS)], 1)
        cells = []
        for m in ("heads", "heads_alone", "previous_default", "fold_mean"):
            err = np.abs(np.array(e["predictions"][m]) - y)
            cells.append(f"{m} {err.mean(0).mean():.4f} | {((w * err).sum(0) / w.sum(0)).mean():.4f}")
        print(f"  {s:8s} " + "   ".join(cells))
    y = np.concatenate([np.array(res["sources"][s]["labels"]) for s in previews])
    p = np.concatenate([np.array(res["sources"][s]["predictions"]["heads"]) for s in previews])
    print("  bias of the shipped blend, pooled over the three preview sources, in the lowest | highest third of labels:")
    for j, t in enumerate(TARGETS):
        lo, hi = np.quantile(y[:, j], [1 / 3, 2 / 3])
        a, b = y[:, j] <= lo, y[:, j] > hi
        print(f"    {t:16s} {np.mean(p[a, j] - y[a, j]):+.3f} | {np.mean(p[b, j] - y[b, j]):+.3f}")


STRETCHES = (1.0, 1.25, 1.5, 2.0)


def stretched(res: dict, feature: str, k: float, held: str) -> np.ndarray:
    """A held-out source's predictions of `feature` pulled away from its fold's centre by `k`: c + k (p - c), clipped to
    0..1, where c is the mean label of the other preview sources (the centre the fold's heads regress towards)."""
    j = TARGETS.index(feature)
    others = [s for s in res["sources"] if s not in (held, "fma")]
    c = np.nanmean(np.concatenate([np.array(res["sources"][o]["labels"])[:, j] for o in others]))
    p = np.array(res["sources"][held]["predictions"]["heads"])[:, j]
    return np.clip(c + k * (p - c), 0.0, 1.0)


def stretch_report(res: dict, catalogue: dict, pooled: list, clip: float, features: tuple[str, ...]) -> None:
    """Per feature: MAE (plain | catalogue-weighted) of each preview source under each stretch, and the stretch each
    source gets when it is chosen by plain MAE on the other two preview sources only; and the low/high-third bias."""
    previews = [s for s in res["sources"] if s != "fma"]
    for t in features:
        j = TARGETS.index(t)
        print(f"\n{t}: held-out MAE plain | catalogue-weighted, predictions stretched away from the fold's centre")
        mae, wmae = {}, {}
        for k in STRETCHES:
            cells = []
            for s in previews:
                y = np.array(res["sources"][s]["labels"])[:, j]
                err = np.abs(stretched(res, t, k, s) - y)
                w = ratio_weights(y, catalogue[t], pooled[j], clip)
                mae[s, k], wmae[s, k] = float(err.mean()), float((w * err).sum() / w.sum())
                cells.append(f"{s} {mae[s, k]:.3f} | {wmae[s, k]:.3f}")
            print(f"  x{k:<4g} " + "   ".join(cells))
        picks = {s: min(STRETCHES, key=lambda k: sum(mae[o, k] for o in previews if o != s)) for s in previews}
        print("  chosen on the other two sources: " + "   ".join(
            f"{s} x{picks[s]:g} -> {mae[s, picks[s]]:.3f} | {wmae[s, picks[s]]:.3f} (x1: {mae[s, 1.0]:.3f} | {wmae[s, 1.0]:.3f})"
            for s in previews))
        y = np.concatenate([np.array(res["sources"][s]["labels"])[:, j] for s in previews])
        lo, hi = np.quantile(y, [1 / 3, 2 / 3])
        for name, ks in (("x1", {s: 1.0 for s in previews}), ("chosen", picks)):
            q = np.concatenate([stretched(res, t, ks[s], s) for s in previews])
            print(f"  bias in the lowest | highest third of labels, {name}: {np.mean((q - y)[y <= lo]):+.3f} | "
                  f"{np.mean((q - y)[y > hi]):+.3f}")


CHAIN_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def chain_report(res: dict, shared: Path, features: tuple[str, ...]) -> None:
    """Per feature: held-out MAE of the shipped predictions mixed with the catalogue's chained estimate (see the module
    docstring), per source and weight, and the weight each preview source gets when chosen on the other two."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    cat = sources.catalogue_frame(shared)
    previews = [s for s in res["sources"] if s != "fma"]
    for t in features:
        j = TARGETS.index(t)
        others = [u for u in TARGETS if u != t]
        ix = [TARGETS.index(u) for u in others]
        x, y = cat[others].to_numpy(float), cat[t].to_numpy(float)
        ok = np.isfinite(x).all(1) & np.isfinite(y)
        g = HistGradientBoostingRegressor(loss="absolute_error", max_iter=200, random_state=0).fit(x[ok], y[ok])
        print(f"\n{t}: held-out MAE, shipped mixed with the catalogue's chained estimate (weight w on the chain)")
        mae = {}
        for s, e in res["sources"].items():
            p, lab = np.array(e["predictions"]["heads"]), np.array(e["labels"])
            m = np.isfinite(lab[:, j])
            chained = g.predict(p[:, ix])
            for w in CHAIN_WEIGHTS:
                mae[s, w] = float(np.mean(np.abs(((1 - w) * p[:, j] + w * chained)[m] - lab[m, j])))
            true = m & np.isfinite(lab[:, ix]).all(1)
            best = float(np.mean(np.abs(g.predict(lab[true][:, ix]) - lab[true, j]))) if true.any() else float("nan")
            print(f"  {s:9s} " + "  ".join(f"w {w:g}: {mae[s, w]:.3f}" for w in CHAIN_WEIGHTS)
                  + f"   (chain on the true other features: {best:.3f})")
        picks = {s: min(CHAIN_WEIGHTS, key=lambda w: (sum(mae[o, w] for o in previews if o != s), w)) for s in previews}
        print("  chosen on the other two preview sources: " + "   ".join(
            f"{s} w {picks[s]:g} -> {mae[s, picks[s]]:.3f} (shipped {mae[s, 0.0]:.3f})" for s in previews))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--features", default=",".join(SHIFTED), help="features whose loss is reweighted")
    ap.add_argument("--clip", type=float, default=5.0, help="largest weight (and 1/clip the smallest)")
    ap.add_argument("--stretch", action="store_true",
                    help="instead of refitting, stretch the shipped held-out predictions of --features away from the centre")
    ap.add_argument("--chain", action="store_true",
                    help="instead of refitting, mix the shipped predictions with the catalogue's chained estimate")
    args = ap.parse_args()
    if args.stretch and args.chain:
        raise SystemExit("try_label_shift: --stretch and --chain are two different checks; give one")
    table = pd.read_csv(args.shared / "spotify-features" / "combined_unique_by_track_id.csv")
    catalogue = {t: shares(table[t].to_numpy(float)) for t in TARGETS}
    labelled = sources.labelled_clips(args.shared)
    previews = labelled[labelled["source"] != "fma"]
    pooled = [shares(previews[t].to_numpy(float)) for t in TARGETS]
    for t in ("energy", "valence"):
        print(f"{t}: labelled previews mean {np.nanmean(previews[t]):.2f}, catalogue mean {table[t].mean():.2f}")
    shipped = sources.evaluate_sources(args.shared, cache=args.cache, progress=False)
    report("shipped recipe", shipped, catalogue, pooled, args.clip)
    if args.stretch:
        stretch_report(shipped, catalogue, pooled, args.clip, tuple(args.features.split(",")))
        return
    if args.chain:
        chain_report(shipped, args.shared, tuple(args.features.split(",")))
        return
    fit_on = sources.fit_on
    sources.fit_on = weighted_fit_on(catalogue, tuple(args.features.split(",")), args.clip)
    try:
        weighted = sources.evaluate_sources(args.shared, cache=args.cache, progress=False)
    finally:
        sources.fit_on = fit_on
    report(f"heads fitted with label-shift weights ({args.features}, clip {args.clip:g})", weighted, catalogue, pooled,
           args.clip)


if __name__ == "__main__":
    main()
