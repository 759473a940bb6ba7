"""Heads variants tried against issue 7's held-out table (leave one source out), with the figures they gave.

    python scripts/try_heads_variants.py [--shared ../shared/data] [--cache DIR] [--nested] [--behaviour] [--blends]
    python scripts/try_heads_variants.py --restrict valence[,danceability]

Each variant adds evidence the shipped heads do not read, then refits the heads without each held-out source:

* `embeddings`: musicnn's penultimate layers (MSD and MTT, 2 x 200 values, in every record already), on each
  feature's linear path only (energy stays restricted to measured inputs);
* `embeddings, acousticness`: the same for acousticness alone (the feature forró misses most);
* `pca16`: the 16 leading principal components of those 400 values, fitted per fold on the training clips' windows;
* `mfcc`: the previous default's 40-value MFCC summary (mean and spread of 20 MFCCs), which its ridge read;
* `members 10 / 20`: a larger ensemble of the same heads (5 shipped).

By default every fold uses the weight decays the shipped model chose for it (config.json), so a row differs from
the shipped one only by the variant. `--nested` instead lets each feature choose, by the same inner
leave-one-source-out that chooses its weight decay, whether to read the embeddings / the MFCC summary: the choice
for a held-out source never sees that source. `--behaviour` also fits on every source and checks the behaviour
clips' checking half (the shipped recipe, and the embeddings for instrumentalness or acousticness alone).
`--blends` scores second members blended with the heads alone, each feature's weight chosen by the nested inner
leave-one-source-out (`sources.pick_blend`, here without the behaviour-rule constraint the shipped selection adds):
the previous default's ridge (what ships), heads without the tagger reading the MFCC summary, heads without the
tagger. `--restrict FEATURES` instead scores the shipped, nested table with those features reading only what energy
reads (measured inputs and the genre prior). Nothing here changes songfeat; the README and docs/accuracy-notes.md
quote its output.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from songfeat import evidence, sources
from songfeat.analyze import get_bundle
from songfeat.heads import DEFAULT_PARTS, NO_TAGGER_PARTS, TARGETS, FitConfig, layout
from songfeat.records import DEFAULT_CACHE
from songfeat.tagger import layout as tagger_layout

ROOT = Path(__file__).resolve().parents[1]
EMB = ("tagger:msd_penultimate", "tagger:mtt_penultimate")
EMB_PARTS = (("tagger", "msd_penultimate", "identity"), ("tagger", "mtt_penultimate", "identity"))
EXTRA_WIDTH: dict[str, int] = {}  # evidence blocks this script adds to the records: name -> width


def _add_block(data, name: str, rows) -> None:
    """Give every record (labelled and behaviour) one more evidence block, `rows(record)` -> [windows, width]."""
    for r in data.lab_recs + data.beh_recs:
        r.blocks[name] = rows(r)
    EXTRA_WIDTH[name] = next(iter(data.lab_recs)).blocks[name].shape[1]


def _private(cfg: FitConfig, parts, feats) -> FitConfig:
    """`cfg` with `parts` read only by `feats`, on their linear path."""
    return replace(cfg, private_parts=cfg.private_parts + tuple((p, tuple(feats)) for p in parts))


def _score(data, lay, cfg, decays, before=None) -> dict[str, np.ndarray]:
    """Held-out per-feature MAE for each source, each fold with its own decays; `before(train)` runs first."""
    out = {}
    for s in sources.SOURCES:
        test = data.source == s
        if before is not None:
            before(~test)
        p = data.predict(~test, test, lay, replace(cfg, weight_decay=decays[s]))
        out[s] = np.abs(p - data.y[test]).mean(0)
    return out


def _inner_best(selection: dict) -> np.ndarray:
    """Per feature: the lowest inner leave-one-source-out MAE over the decay grid (`select_decay`'s report)."""
    return np.array(list(selection["inner_mae"].values())).min(0)


def _nested(data, lay, cfg, parts) -> dict[str, np.ndarray]:
    """Per held-out source: each feature reads `parts` or not, as the inner leave-one-source-out prefers."""
    out = {}
    for s in sources.SOURCES:
        test = data.source == s
        pool = ~test
        off, sel_off = sources.select_decay(data, pool, lay, _private(cfg, parts, ()))
        on, sel_on = sources.select_decay(data, pool, lay, _private(cfg, parts, TARGETS))
        use = _inner_best(sel_on) < _inner_best(sel_off)
        feats = [t for t, u in zip(TARGETS, use) if u and t != "energy"]
        decays = tuple(float(a if u else b) for a, b, u in zip(on.decays(), off.decays(), use))
        p = data.predict(pool, test, lay, replace(_private(cfg, parts, feats), weight_decay=decays))
        out[s] = np.abs(p - data.y[test]).mean(0)
        print(f"    {s}: reads it: {', '.join(feats) or 'none'}", flush=True)
    return out


def _behaviour(data, shared: Path, cache: Path, lay, cfg: FitConfig) -> str:
    """Heads fitted on every labelled source and the fitting half, checked on the behaviour checking half: held rules
    and the failed ones with their values."""
    from songfeat import behaviour
    from songfeat.records import get_records

    man = behaviour.read_manifest(shared)
    check = man[man["half"] == "check"].reset_index(drop=True)
    recs = get_records(list(check["path"]), cache, True, 2, False)
    ok = [(p, r) for p, r in zip(check["path"], recs) if not isinstance(r, str)]
    every = np.ones(len(data.clips), bool)
    model, _ = data.fit(every, lay, cfg)
    slope, icpt, _, _ = data.calibrated(every)
    num = data.bundle.normalise("numeric", sources._numeric([r for _, r in ok], slope, icpt))
    pred = sources.clip_predictions(model, [r for _, r in ok], lay, num)
    outs = {p: dict(zip(TARGETS, v.tolist())) for (p, _), v in zip(ok, pred)}
    outs.update({p: r for p, r in zip(check["path"], recs) if isinstance(r, str)})
    table = behaviour.check(check, outs)
    missed = table[~table["holds"].astype(bool)]
    s = behaviour.summary(table, "check")
    return f"{s['hold']} of {s['rules']}; missed: " + "; ".join(f"{Path(r.file).stem} {r.rule} ({r.value:.2f})" for r in missed.itertuples())


def _print(name: str, res: dict[str, np.ndarray], seconds: float) -> None:
    print(f"{name:34s} " + "  ".join(f"{s} {v.mean():.4f}" for s, v in res.items()) + f"   ({seconds:.0f} s)")
    for s, v in res.items():
        print(f"    {s:8s} " + " ".join(f"{t[:5]} {x:.3f}" for t, x in zip(TARGETS, v)))
    sys.stdout.flush()


def _blends(data, heads_lay, cfg: FitConfig, decays: dict) -> None:
    """Each second member blended with the heads alone (shipped recipe, the fold's decays), weights nested per feature."""
    alone = replace(cfg, feature_parts=(("energy", ("vad:all", "pitch:all", "dynamics:all")),))  # no genre prior here
    members = {"ridge on the MFCC summary (ships)": None,
               "heads without tagger, with MFCC summary": (layout(NO_TAGGER_PARTS + (("mfcc", "all", "identity"),)), alone),
               "heads without tagger": (layout(NO_TAGGER_PARTS), alone)}
    grid = sources.BLEND_GRID
    for name, member in members.items():
        t, res, picks = time.time(), {}, {}
        for held in sources.SOURCES:
            pool = data.source != held
            c = replace(cfg, weight_decay=decays[held])

            def second(train, test):
                if member is None:
                    return data.predict_ridge(train, test)[0]
                return data.predict(train, test, member[0], replace(member[1], weight_decay=decays[held]))

            maes = []
            for s in sources.SOURCES:
                it = pool & (data.source == s)
                if not it.any():
                    continue
                h, o = data.predict(pool & ~it, it, heads_lay, c), second(pool & ~it, it)
                with warnings.catch_warnings():  # FMA's instrumentalness is never scored: an all-NaN column
                    warnings.simplefilter("ignore", RuntimeWarning)
                    maes.append(np.stack([np.nanmean(np.abs((1 - a) * h + a * o - data.y_fit[it]), axis=0) for a in grid]))
            mae = np.nanmean(np.stack(maes), axis=0)
            w = sources.pick_blend(mae, np.zeros_like(mae), grid)
            test = ~pool
            h, o = data.predict(pool, test, heads_lay, c), second(pool, test)
            res[held], picks[held] = np.nanmean(np.abs((1 - w) * h + w * o - data.y[test]), axis=0), w
        _print(f"blend: {name}", res, time.time() - t)
        print("    weights " + "; ".join(f"{s} " + " ".join(f"{a:g}" for a in w) for s, w in picks.items()), flush=True)


def _restricted(shared: Path, cache: Path, feats: tuple[str, ...]) -> None:
    """The shipped recipe's nested leave-one-source-out table with `feats` reading only what energy reads (measured
    inputs and the genre prior, linear path), beside the shipped recipe's own figures from its config."""
    cfg = FitConfig()
    energy_parts = dict(cfg.feature_parts)["energy"]
    cfg = replace(cfg, feature_parts=cfg.feature_parts + tuple((f, energy_parts) for f in feats if f != "energy"))
    res = sources.evaluate_sources(shared, cache=cache, progress=False, cfg=cfg)
    shipped = json.loads((ROOT / "src" / "songfeat" / "weights" / "default" / "config.json").read_text())
    shipped = shipped["metrics"]["leave_one_source_out"]
    print(f"{', '.join(feats)} restricted like energy; average MAE, shipped blend / heads alone (the shipped recipe's):")
    for s, e in res["sources"].items():
        a, b = (e["learned"][k]["average"]["mae"] for k in ("heads", "heads_alone"))
        print(f"  {s:8s} {a:.4f} / {b:.4f}   ({shipped[s]['learned']['heads']['average']['mae']:.4f} / "
              f"{shipped[s]['learned']['heads_alone']['average']['mae']:.4f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--nested", action="store_true", help="each feature chooses the added evidence by inner LOSO (~8 min)")
    ap.add_argument("--behaviour", action="store_true", help="also fit on everything and check the behaviour checking half")
    ap.add_argument("--blends", action="store_true", help="only the blends of second members with the heads (~5 min)")
    ap.add_argument("--restrict", default=None, metavar="FEATURES",
                    help="only: the shipped, nested table with these features (comma-separated) restricted like energy "
                         "to measured inputs and the genre prior (~2.5 min)")
    args = ap.parse_args()
    if args.restrict:
        _restricted(args.shared, args.cache, tuple(args.restrict.split(",")))
        return
    config = json.loads((ROOT / "src" / "songfeat" / "weights" / "default" / "config.json").read_text())
    decays = {s: tuple(config["metrics"]["leave_one_source_out"][s]["decay"]) for s in sources.SOURCES}
    genre = sources.default_genre_table(args.shared)
    data = sources._Data(args.shared, get_bundle(None), args.cache, True, 2, True)
    width = evidence.block_width
    evidence.block_width = lambda b: EXTRA_WIDTH.get(b) or width(b)  # the added blocks' widths, for part_columns
    cfg = FitConfig()
    base = layout(DEFAULT_PARTS, genre)
    with_emb = layout(DEFAULT_PARTS + EMB_PARTS, genre)
    with_mfcc = layout(DEFAULT_PARTS + (("mfcc", "all", "identity"),), genre)
    sl = [tagger_layout()["msd_penultimate"], tagger_layout()["mtt_penultimate"]]
    pen = {id(r): np.concatenate([r.blocks["tagger"][:, s] for s in sl], 1) for r in data.lab_recs + data.beh_recs}
    _add_block(data, "pca16", lambda r: np.zeros((len(r.weights), 16)))
    with_pca = layout(DEFAULT_PARTS + (("pca16", "all", "identity"),), genre)

    def pca(train: np.ndarray) -> None:  # components from the training clips' (and behaviour fitting half's) windows
        x = np.concatenate([pen[id(r)] for r, t in zip(data.lab_recs, train) if t] + [pen[id(r)] for r in data.beh_recs])
        mu = x.mean(0)
        _, sv, vt = np.linalg.svd(x - mu, full_matrices=False)
        proj = vt[:16].T / (sv[:16] / np.sqrt(len(x)))
        for r in data.lab_recs + data.beh_recs:
            r.blocks["pca16"] = (pen[id(r)] - mu) @ proj

    others = tuple(t for t in TARGETS if t != "energy")
    runs = [("shipped recipe", base, cfg, None),
            ("embeddings (linear, all but energy)", with_emb, _private(cfg, EMB, others), None),
            ("embeddings, acousticness only", with_emb, _private(cfg, EMB, ("acousticness",)), None),
            ("pca16 (linear, all but energy)", with_pca, _private(cfg, ("pca16:all",), others), pca),
            ("mfcc (linear, all but energy)", with_mfcc, _private(cfg, ("mfcc:all",), others), None),
            ("mfcc, acousticness only", with_mfcc, _private(cfg, ("mfcc:all",), ("acousticness",)), None),
            ("members 10", base, replace(cfg, members=10), None),
            ("members 20", base, replace(cfg, members=20), None)]
    if args.blends:
        _blends(data, base, cfg, decays)
        return
    print("held-out MAE, each fold at the shipped model's weight decays for it")
    for name, lay, c, before in runs:
        t = time.time()
        _print(name, _score(data, lay, c, decays, before), time.time() - t)
    if args.behaviour:  # the shipped model's own weight decays; embeddings for the two features the rules test most
        shipped = replace(cfg, weight_decay=tuple(config["split"]["heads"]["fit"]["weight_decay"]))
        for name, lay, c in (("shipped recipe", base, shipped),
                             ("embeddings, instrumentalness only", with_emb, _private(shipped, EMB, ("instrumentalness",))),
                             ("embeddings, acousticness only", with_emb, _private(shipped, EMB, ("acousticness",)))):
            print(f"behaviour checking half, {name}: {_behaviour(data, args.shared, args.cache, lay, c)}", flush=True)
    if args.nested:
        for name, lay, parts in (("nested: embeddings", with_emb, EMB), ("nested: mfcc", with_mfcc, ("mfcc:all",))):
            t = time.time()
            print(name, flush=True)
            _print(name, _nested(data, lay, cfg, parts), time.time() - t)


if __name__ == "__main__":
    main()
