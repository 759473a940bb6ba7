"""Honest real-data run: every seed family, 5-fold CV on ../shared/data/spotify-previews (102 clips), beside the seed's numbers.

    .venv/bin/python scripts/run_previews_cv.py [--shared ../shared/data] [--store runs/previews-store]
                                               [--folds 5] [--seed 42] [--out docs/results-previews.md]

Builds the store once (songfeat.data.store.build_store, seed MFCC 20x160 + measured descriptors),
then for each family and each fold trains a bundle on the training folds (with its own validation
carve-out for early stopping) and predicts the held-out fold through load_bundle/Bundle.predict.
Metrics are computed on the pooled out-of-fold predictions: every clip is scored exactly once, by a
model that never saw it. The baseline predicts the training folds' mean.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from songfeat import atomic, features
from songfeat.bundle import load_bundle
from songfeat.data.dataset import Dataset, dataset_from_store
from songfeat.data.splits import kfold
from songfeat.data.store import build_store, open_store
from songfeat.errors import SongfeatError, counted
from songfeat.evaluate import compare, predict_dataset, regression_metrics
from songfeat.train import train_bundle

SEED5 = features.SEED_TARGETS
THREADS = 2  # torch threads per training run (the run facts' "2 cores")
DEFAULT_STORE = Path("runs/previews-store")
PREVIEWS_SKEW = ("skewed: 54 are Brazilian forró/piseiro, energy and valence are mostly\nhigh, speechiness is low "
                 "throughout (max 0.16), instrumentalness is ~0 for all but a handful.")  # the whole set (SOURCE.md)
#: (label in the table, family, targets, numeric source, hparams)
RUNS: list[tuple[str, str, tuple[str, ...], str | None, dict | None]] = [
    ("numeric-mlp (label inputs, as the seed)", "numeric-mlp", SEED5, "labels", None),
    ("numeric-mlp sigmoid (label inputs)", "numeric-mlp", SEED5, "labels", {"activation": "sigmoid"}),
    ("numeric-mlp (measured inputs)", "numeric-mlp", SEED5, "measured", None),
    ("lstm-multitask", "lstm-multitask", SEED5, None, None),
    ("cnn-complex", "cnn-complex", SEED5, None, None),
    ("combiner (d)", "combiner", SEED5, "labels", None),
    ("cnn-simple", "cnn-simple", ("danceability",), None, None),
    ("lstm-simple", "lstm-simple", ("danceability",), None, None),
    ("cnn-valence", "cnn-valence", ("valence",), None, None),
]

#: The seed report's Tables 1-4 (MSE, MAE, Pearson) on its own 20k-track random split; None = not reported ("X").
SEED_PUBLISHED: dict[str, dict[str, tuple[float, float, float] | None]] = {
    "Multi-task Regression": {"danceability": (0.017, 0.103, 0.699), "energy": (0.045, 0.159, 0.801),
                              "speechiness": (0.070, 0.166, 0.644), "acousticness": (0.008, 0.053, 0.321),
                              "instrumentalness": (0.013, 0.089, 0.900), "average": (0.030, 0.114, 0.673)},
    "Multi-task 1D RNN": {"danceability": (0.019, 0.111, 0.615), "energy": (0.018, 0.107, 0.876),
                          "speechiness": (0.007, 0.054, 0.363), "acousticness": (0.024, 0.113, 0.901),
                          "instrumentalness": (0.052, 0.141, 0.772), "average": (0.024, 0.105, 0.705)},
    "Complex CNN": {"average": (0.026, 0.111, float("nan"))},
    "Simple 2D CNN": {"danceability": (0.001, 0.080, 0.811), "average": (0.001, 0.080, 0.811)},
    "Simple 1D RNN": {"danceability": (0.010, 0.079, 0.830), "average": (0.010, 0.079, 0.830)},
    "Linear Combiner": {"danceability": (0.022, 0.117, 0.549), "energy": (0.030, 0.134, 0.771),
                        "speechiness": (0.008, 0.058, 0.311), "acousticness": (0.066, 0.196, 0.694),
                        "instrumentalness": (0.082, 0.200, 0.574), "average": (0.042, 0.141, 0.580)},
}


def ensure_store(shared: Path, store: Path) -> Path:
    """Build the previews store once (resumable); reuse it afterwards."""
    if not (store / "manifest.json").is_file() or not open_store_ok(store):
        src = shared / "spotify-previews"
        build_store(src / "labels.csv", src / "audio", store, frontend="mfcc", workers=1, progress=False)
    return store


def open_store_ok(store: Path) -> bool:
    try:
        open_store(store)
        return True
    except Exception:
        return False


def check_folds(folds: list[dict], store: Path, label: str) -> list[dict]:
    """`folds` as they are, or a SongfeatError naming the store when a fold's training part is under 2 clips (a
    traceback from train_bundle, minutes in)."""
    least = min(len(f["train"]) for f in folds)
    if least < 2:
        raise SongfeatError(store, f"{label}: with {len(folds)} folds one trains on only {counted(least, 'clip')} (2 at "
                                   "least); use more clips, or fewer --folds")
    return folds


def cv_predict(name: str, family: str, data: Dataset, folds: list[dict], seed: int, hparams: dict | None,
               workdir: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """Out-of-fold predictions of one family and of the training-mean baseline, plus run facts."""
    pred = np.full(data.targets.shape, np.nan, dtype=np.float64)
    base = np.full(data.targets.shape, np.nan, dtype=np.float64)
    pos = {k: i for i, k in enumerate(data.ids)}
    epochs, secs, const = [], 0.0, 0
    for f, fold in enumerate(folds):
        t0 = time.perf_counter()
        out = train_bundle(family, data, workdir / f"{family}-{f}", targets=data.target_names, seed=seed + f,
                           split=fold, hparams=hparams, progress=False)
        secs += time.perf_counter() - t0
        b = load_bundle(out)
        epochs.append(b.config["training"]["epochs_run"])
        const += bool((b.config.get("metrics") or {}).get("constant_outputs"))
        test = data.select_ids(fold["test"])
        rows = [pos[k] for k in fold["test"]]
        pred[rows] = predict_dataset(b, test)
        base[rows] = data.select_ids(fold["train"] + fold["val"]).targets.mean(axis=0)
    assert not np.isnan(pred).any(), "some clip was never in a test fold"
    return pred, base, {"epochs": epochs, "seconds": round(secs, 1), "folds_with_constant_output": const}


def seed_table() -> str:
    """The seed's published Tables 1-4 as one markdown table (MSE/MAE, then Pearson)."""
    cols = list(SEED5) + ["average"]
    fmt = lambda v: "X" if v is None else "/".join("–" if np.isnan(x) else f"{x:.3f}" for x in v[:2])
    fmtp = lambda v: "X" if v is None or np.isnan(v[2]) else f"{v[2]:.3f}"
    lines = ["| seed model (report, 20k tracks) | " + " | ".join(f"{c} (MSE/MAE)" for c in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for m, d in SEED_PUBLISHED.items():
        lines.append(f"| {m} | " + " | ".join(fmt(d.get(c)) for c in cols) + " |")
    lines += ["", "| seed model (report) | " + " | ".join(f"{c} (Pearson)" for c in cols) + " |",
              "|---|" + "---:|" * len(cols)]
    for m, d in SEED_PUBLISHED.items():
        lines.append(f"| {m} | " + " | ".join(fmtp(d.get(c)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def whole_previews(manifest: dict) -> bool:
    """Whether a store holds all of spotify-previews (its labels, no --limit, every clip built), the set whose skew the
    page's caveat describes; a store of other clips, or of a dozen previews, must not be described as it."""
    src = Path(str((manifest.get("labels") or {}).get("source") or ""))
    return (src.parent.name == "spotify-previews" and manifest.get("limit") is None and not manifest.get("failed")
            and not manifest.get("labels_without_audio"))


def pearson_halfwidth(r: float, n: int) -> float:
    """Half the width of the 95% interval (Fisher z) of a Pearson `r` over `n` pairs: how noisy the page's r's are."""
    z, se = np.arctanh(r), 1.96 / np.sqrt(max(n - 3, 1))
    return float((np.tanh(z + se) - np.tanh(z - se)) / 2)


def _per_fold(n: int, folds: int) -> str:
    """The held-out clips per fold in words ('Twenty-odd' for 102 in 5), as the page says it."""
    per = n // folds
    return "Twenty-odd" if 20 <= per < 30 else (f"{per}" if n % folds == 0 else f"{per} or {per + 1}")


def page_text(a: argparse.Namespace, manifest: dict, ns: list[int], results: list[dict], labels: list[str],
              facts: list[tuple[str, dict]]) -> str:
    """The results page of one run: its store, folds and clip counts are this run's (a run on another --store or
    --folds wrote "n = 102", "5 folds" and the previews' skew)."""
    n = max(ns) if ns else 0
    said_n = (f"n = {n}" if len(set(ns)) <= 1
              else f"n = {min(ns)}–{n}: a run leaves out the clips lacking a value it needs")
    previews = whole_previews(manifest)
    store = "" if a.store == DEFAULT_STORE else f" --store {a.store}"
    if previews:
        what, built = "spotify-previews", ("store: seed MFCC 20x160 + measured descriptors, built from "
                                           "`spotify-previews/labels.csv` + `audio/`")
    else:
        shape = "x".join(map(str, (manifest.get("shape") or [0])[1:]))
        descs = " + measured descriptors" if manifest.get("descriptors") else ""
        what = f"`{a.store}`"
        built = (f"store `{a.store}`: {manifest.get('frontend_name')} {shape}{descs}, built from "
                 f"`{(manifest.get('labels') or {}).get('source')}`")
    caveat = f"{n} clips, {PREVIEWS_SKEW}" if previews else f"{n} clips."
    hw = pearson_halfwidth(0.3, n)
    md = [
        f"# Seed model families on {what} ({a.folds}-fold CV)",
        "",
        f"Command: `.venv/bin/python scripts/run_previews_cv.py{store} --folds {a.folds} --seed {a.seed}` ({built}).",
        "Each clip is predicted once, by the model of the fold that held it out; metrics are on those pooled",
        f"out-of-fold predictions ({said_n}). Each fold's model early-stops on a 15% validation carve-out of its",
        "training folds. The mean predictor outputs the training folds' mean: a model that does not beat it has",
        "learned nothing usable. Its Pearson is negative by construction, not by bad luck: each fold predicts",
        "the mean of the *other* folds, which is lower exactly where the held-out fold's values are higher.",
        "",
        f"**Tiny-data caveat.** {caveat} {_per_fold(n, a.folds)}",
        f"test clips per fold make every figure here noisy (a Pearson of 0.3 on {n} pairs has a 95% interval of",
        f"roughly ±{hw:.2f}), and none of it says how the models do on music at large. The seed's numbers below come",
        "from ~20,000 tracks and a random 80/20 (or 70/15/15) split, so they are not comparable row for row;",
        "they are shown to place ours, not to rank against.",
        "",
        "## Ours (out-of-fold, MSE/MAE, then Pearson)",
        "",
        compare(results, labels=labels),
        "## The seed's published numbers (report Tables 1–4; X = not reported)",
        "",
        seed_table(),
        "## Run facts",
        "",
        f"| run | epochs run per fold (early stop) | training seconds ({a.folds} folds, {THREADS} cores) | folds whose model "
        "output a constant (held-out fold) |",
        "|---|---|---:|---:|",
    ]
    for label, f in facts:
        md.append(f"| {label} | {', '.join(map(str, f['epochs']))} | {f['seconds']} | {f['folds_with_constant_output']} |")
    return "\n".join(md) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path("../shared/data"))
    ap.add_argument("--store", type=Path, default=DEFAULT_STORE)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--only", default=None, help="comma-separated family names to run (default: all)")
    ap.add_argument("--out", type=Path, default=Path("docs/results-previews.md"))
    a = ap.parse_args(argv)
    torch.set_num_threads(THREADS)
    try:
        return _run(a)
    except (SongfeatError, ValueError, KeyError) as e:  # a store too small for the folds: one line, not a traceback
        where = "" if isinstance(e, SongfeatError) else f"{a.store}: "
        print(f"run_previews_cv: error: {where}{e}", file=sys.stderr)
        return 2


def _run(a: argparse.Namespace) -> int:
    """The cross-validation of `main`'s parsed options; writes a.out and returns 0."""
    store = open_store(ensure_store(a.shared, a.store))
    results, labels, facts, ns = [], [], [], []
    base_done: set[tuple[str, ...]] = set()
    with tempfile.TemporaryDirectory(prefix="songfeat-cv-") as tmp:
        for label, family, targets, source, hp in RUNS:
            if a.only and family not in a.only.split(","):
                continue
            numeric = None
            if source is not None:
                numeric = features.SEED_NUMERIC_INPUTS if source == "labels" else features.MEASURED_NUMERIC_INPUTS
            data = dataset_from_store(store, targets, numeric_inputs=numeric, numeric_source=source or "labels",
                                      frontend=family != "numeric-mlp")
            if len(data) != len(store):
                print(f"{label}: {len(store) - len(data)} clips dropped for missing values", file=sys.stderr)
            print(f"{label}: {a.folds}-fold CV on {len(data)} clips ...", file=sys.stderr, flush=True)
            # the folds of the clips this family can use: folds of all the store's ids handed a clip lacking a label
            # to train_bundle, a KeyError; the same folds as before when no clip lacks one (kfold sorts the ids)
            folds = check_folds(kfold(data.ids, k=a.folds, seed=a.seed), a.store, label)
            pred, base, fact = cv_predict(label, family, data, folds, a.seed, hp, Path(tmp))
            results.append(regression_metrics(data.targets, pred, targets))
            ns.append(len(data))
            labels.append(label)
            facts.append((label, fact))
            if targets not in base_done:
                base_done.add(targets)
                results.append(regression_metrics(data.targets, base, targets))
                labels.append(f"mean predictor ({', '.join(targets) if len(targets) < 3 else '5 seed targets'})")
            print(compare(results[-2:] if labels[-1].startswith("mean") else results[-1:],
                          labels=labels[-2:] if labels[-1].startswith("mean") else labels[-1:]), file=sys.stderr)
    text = page_text(a, store.manifest, ns, results, labels, facts)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic.replacing(a.out, encoding="utf-8") as f:  # an interrupted write left the docs page half written
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
