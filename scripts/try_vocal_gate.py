"""A vocal gate for instrumentalness from musicnn's vocal tags, scored held out (issue 7).

    python scripts/try_vocal_gate.py [--shared ../shared/data] [--cache DIR] [--typical 0.85] [--catalogue-prior]
                                     [--instrumental-tag]

The one-input gate was not adopted; the two-input switch of `--instrumental-tag` ships as `songfeat.vocal_gate`
(which sets the catalogue's median above 0.5, 0.875, rather than `--typical`).

Spotify's instrumentalness "predicts whether a track contains no vocals". The MTT tagger was trained on listeners'
vocal tags (vocal, vocals, singing, voice, male/female vocal and voice, man, woman, male, female, choir, choral,
opera), so their largest probability `v` is evidence the heads might under-use with only nine instrumental clips
to learn from. The gate: P(instrumental) = logistic(a + b log(v + 0.001)), fitted on the training sources'
previews (label > 0.5) and the behaviour fitting half's instrumental (1) and sung or spoken (0) clips; FMA is never
a fitting target here (Echo Nest's instrumentalness, see `songfeat.sources`). Two ways to use it, each only ever
raising the shipped prediction h:
* `mixture`: (1 - P) h + P q, q the typical value of an instrumental track (`--typical`, the catalogue's
  instrumental median is about 0.85): the expected value if the heads describe sung music;
* `switch`: q where P > 0.5, else h (the median of that mixture, which is what absolute error rewards).
Each held-out source is scored with the gate fitted without it, beside the shipped model's held-out predictions
(`sources.evaluate_sources`, the same nested selection); the behaviour checking half with the gate fitted on every
source. `v` is the duration-weighted mean of the clip's per-window tags, so the gate acts per clip here.

With `--catalogue-prior`, the gate's intercept is moved from its fitting rows' instrumental share to the share of
tracks above 0.5 in Spotify's 41,855-track table (Bayes' rule for a shifted class prior: the logistic's slope is a
likelihood ratio, its intercept carries the prior), since the fitting rows hold fewer instrumentals than the catalogue.

With `--instrumental-tag` the gate has a second input, log of the MSD tagger's "instrumental" tag (last.fm listeners'
word for music without a voice), which on the behaviour clips ranks the two instrumental checking misses above all but
one preview song (`scripts/try_musicnn_vgg.py gate`).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from songfeat import behaviour, sources
from songfeat.records import DEFAULT_CACHE, get_records
from songfeat.tagger import MSD_TAGS, MTT_TAGS, layout
from songfeat.vocal_gate import VOICE_WORDS as VOCAL_TAGS  # the shipped gate's words

INSTR = sources.TARGETS.index("instrumentalness")


def vocal_evidence(record, instrumental_tag: bool = False) -> np.ndarray:
    """The largest MTT vocal-tag probability of a clip (duration-weighted mean over its windows), and with
    `instrumental_tag` the MSD tagger's "instrumental" probability beside it."""
    mean = record.mean("tagger")
    tags = mean[layout()["mtt_tags"]]
    v = [max(tags[MTT_TAGS.index(t)] for t in VOCAL_TAGS)]
    if instrumental_tag:
        v.append(mean[layout()["msd_tags"]][MSD_TAGS.index("instrumental")])
    return np.array(v, dtype=float)


def fit_gate(v: np.ndarray, instrumental: np.ndarray) -> tuple[float, np.ndarray]:
    """(a, b) of P(instrumental) = logistic(a + b · log(v + 0.001)), maximum likelihood (sklearn's default L2, C=1)."""
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression().fit(np.log(np.atleast_2d(v.T).T + 1e-3), instrumental.astype(int))
    return float(lr.intercept_[0]), lr.coef_[0].astype(float)


def logit(q: float) -> float:
    return float(np.log(q / (1 - q)))


def catalogue_share(shared: Path) -> float:
    """The share of Spotify's 41,855-track table above 0.5 instrumentalness (Spotify: "values above 0.5 are intended to
    represent instrumental tracks")."""
    import pandas as pd

    from songfeat.genre_prior import SPOTIFY_CATALOGUE

    y = pd.read_csv(shared / SPOTIFY_CATALOGUE, usecols=["instrumentalness"])["instrumentalness"].to_numpy(float)
    return float(np.mean(y[np.isfinite(y)] > 0.5))


def probability(gate: tuple[float, np.ndarray], v) -> np.ndarray:
    """P(instrumental) of vocal evidence `v` ([n, inputs]) under a fitted gate (a, b)."""
    a, b = gate
    x = np.log(np.atleast_2d(np.asarray(v, dtype=float)) + 1e-3)
    return 1 / (1 + np.exp(-(a + x @ b)))


def gated(h: np.ndarray, p: np.ndarray, q: float, how: str) -> np.ndarray:
    """The gate applied to instrumentalness predictions h, never lowering them."""
    g = (1 - p) * h + p * q if how == "mixture" else np.where(p > 0.5, q, h)
    return np.maximum(h, g)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--typical", type=float, default=0.85)
    ap.add_argument("--catalogue-prior", action="store_true",
                    help="move the gate's intercept to the catalogue's instrumental share (see the docstring)")
    ap.add_argument("--instrumental-tag", action="store_true",
                    help="a second gate input: the MSD tagger's \"instrumental\" tag (see the docstring)")
    args = ap.parse_args()
    target_share = catalogue_share(args.shared) if args.catalogue_prior else None

    res = sources.evaluate_sources(args.shared, cache=args.cache)
    clips = sources.labelled_clips(args.shared)
    man = behaviour.read_manifest(args.shared)
    recs = get_records(list(clips["path"]) + list(man["path"]), args.cache, True, 1, True)
    v_of = {p: vocal_evidence(r, args.instrumental_tag) for p, r in zip(list(clips["path"]) + list(man["path"]), recs) if not isinstance(r, str)}
    by_id = dict(zip(clips["track_id"], clips["path"]))
    fit_beh = [(v_of[p], any(r.feature == "instrumentalness" and r.op == ">" for r in rules))
               for p, rules, h in zip(man["path"], man["rules"], man["half"])
               if h == "fit" and p in v_of and any(r.feature == "instrumentalness" for r in rules)]
    lab = {p: (s, y) for p, s, y in zip(clips["path"], clips["source"], clips["instrumentalness"])}

    def gate_without(held: str | None) -> tuple[float, float]:
        rows = [(v_of[p], y > 0.5) for p, (s, y) in lab.items() if s != held and s != "fma" and p in v_of and np.isfinite(y)]
        rows += fit_beh
        labels = np.array([b for _, b in rows])
        a, b = fit_gate(np.array([a for a, _ in rows]), labels)
        if target_share is not None:
            a += logit(target_share) - logit(float(labels.mean()))
        return a, b

    if target_share is not None:
        print(f"gate intercept moved to the catalogue's instrumental share, {target_share:.3f}")
    print(f"gate inputs: {sum(b for _, b in fit_beh)} instrumental and {sum(not b for _, b in fit_beh)} sung/spoken "
          f"behaviour fitting clips, plus the training sources' previews; typical instrumental value {args.typical}")
    print("held-out source | shipped instr. MAE / avg of 7 | mixture | switch | clips with P > 0.5 (label, shipped)")
    for held, e in res["sources"].items():
        gate = gate_without(held)
        y, h = np.array(e["labels"]), np.array(e["predictions"]["heads"])
        p = probability(gate, [v_of[by_id[t]] for t in e["track_ids"]])
        cells = []
        for how in ("shipped", "mixture", "switch"):
            g = h.copy()
            if how != "shipped":
                g[:, INSTR] = gated(h[:, INSTR], p, args.typical, how)
            mae = np.nanmean(np.abs(g - y), axis=0)
            cells.append(f"{mae[INSTR]:.4f} / {mae.mean():.4f}")
        moved = [(round(float(y[i, INSTR]), 2), round(float(h[i, INSTR]), 2)) for i in np.flatnonzero(p > 0.5)]
        print(f"{held} ({len(y)}) | " + " | ".join(cells) + f" | {moved}  (gate a={gate[0]:.2f}, b={np.round(gate[1], 2)})")

    gate = gate_without(None)
    _, outputs = behaviour.analyze_clips(args.shared)
    check = man[man["half"] == "check"]
    for how in ("shipped", "mixture", "switch"):
        held_ok, total, fails = 0, 0, []
        for p, f, rules in zip(check["path"], check["file"], check["rules"]):
            out = outputs.get(p)
            if not isinstance(out, dict) or p not in v_of:
                continue
            x = out["instrumentalness"]
            if how != "shipped":
                x = float(gated(np.array([x]), probability(gate, [v_of[p]]), args.typical, how)[0])
            for r in rules:
                if r.feature == "instrumentalness":
                    total += 1
                    held_ok += r.holds(x)
                    if not r.holds(x):
                        fails.append(f"{Path(f).name} {r} ({x:.2f})")
        print(f"checking half, instrumentalness rules, {how}: {held_ok} of {total} hold; fail: {fails}")


if __name__ == "__main__":
    main()
