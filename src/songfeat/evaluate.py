"""The seed's metrics (MSE, MAE, RMSE, R², Pearson per target and averaged), tables, plots, comparisons.

Everything here works on plain arrays, so the same numbers come out whether predictions came from a
bundle, a cross-validation fold or the lead's `evaluate-audio`. Undefined values (Pearson or R² of a
constant column) are NaN in Python and null in JSON, never silently 0.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

METRICS: tuple[str, ...] = ("mse", "mae", "rmse", "r2", "pearson")
DANCEABLE_THRESHOLD = 0.5  # the seed's first, binary view: danceable when danceability > 0.5
CONSTANT_RATIO = 0.01  # predictions whose spread is < 1% of the truth's spread count as one constant
CONSTANT_ABS = 1e-4  # ... or whose standard deviation is below this outright
MIN_PEARSON_N = 3  # r of 2 points is ±1 whatever the model (any 2 lie on a line): it needs a third to say anything
MIN_MEANINGFUL_N = 16  # fewer scored clips: an r of 0.5 is not told from 0 (two-sided p > 0.05 up to n = 15), a warning
# R² is undefined when the truth's std is below R2_MIN_STD x max(1, its largest |value|): the 0-1 labels are published
# to 3 decimals, so a smaller spread is rounding, and dividing by it sent R² to -7e11 (instrumentalness ~0 everywhere)
R2_MIN_STD = 1e-3


def _as_2d(a: Any) -> np.ndarray:
    x = np.asarray(a, dtype=np.float64)
    return x[:, None] if x.ndim == 1 else x


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r of two 1-D arrays; NaN when either is constant (r is undefined there) or under `MIN_PEARSON_N` long
    (2 points give ±1 whatever they are)."""
    if len(x) < MIN_PEARSON_N:
        return float("nan")
    x = np.asarray(x, dtype=np.float64) - np.mean(x)
    y = np.asarray(y, dtype=np.float64) - np.mean(y)
    den = math.sqrt(float(np.sum(x * x)) * float(np.sum(y * y)))
    if den <= 1e-15 * max(len(x), 1):
        return float("nan")
    return float(np.clip(np.sum(x * y) / den, -1.0, 1.0))


def target_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MSE, MAE, RMSE, R² and Pearson of one target column, its bias (mean prediction minus truth: the shift a new
    source shows, which MAE and r hide) and `n`, the rows scored: those whose label is known, so a missing (NaN) label
    leaves out that row of this target only, where it made every figure of the target NaN. R² is NaN when the truth
    barely varies (`r2_undefined`), Pearson under `MIN_PEARSON_N` rows."""
    t = np.asarray(y_true, dtype=np.float64)
    known = ~np.isnan(t)
    t, p = t[known], np.asarray(y_pred, dtype=np.float64)[known]
    if not t.size:  # no row labelled: every figure undefined, not numpy's warning about an empty mean
        return {**dict.fromkeys((*METRICS, "bias"), float("nan")), "n": 0}
    err = p - t
    mse = float(np.mean(err**2))
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    r2 = float("nan") if r2_undefined(t) else 1.0 - float(np.sum(err**2)) / ss_tot
    return {"mse": mse, "mae": float(np.mean(np.abs(err))), "rmse": math.sqrt(mse), "r2": r2, "pearson": pearson(t, p),
            "bias": float(np.mean(err)), "n": int(t.size)}


def r2_undefined(t: np.ndarray) -> bool:
    """Whether the known truths `t` vary too little for R² (whose denominator is their spread) to mean anything: a std
    under `R2_MIN_STD` of their scale, so a near-constant label is not scored as R² = -7e11."""
    return float(np.std(t)) <= R2_MIN_STD * max(1.0, float(np.max(np.abs(t))))


def regression_metrics(y_true: Any, y_pred: Any, names: Sequence[str]) -> dict:
    """Per-target and averaged metrics for [N, K] truth and predictions (K = len(names)).

    Returns {"n": N, "targets": {name: {mse, mae, rmse, r2, pearson, bias, n}}, "average": {...}}; a target's `n` is
    the rows with its label (`target_metrics`). The average is the plain mean over targets (NaNs skipped) of the
    `METRICS`, as the seed's "Average" column (not of the bias, whose signs would cancel).
    """
    t, p = _as_2d(y_true), _as_2d(y_pred)
    names = list(names)
    if t.shape != p.shape:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} differ in shape")
    if t.shape[1] != len(names):
        raise ValueError(f"{t.shape[1]} columns but {len(names)} names")
    if t.shape[0] < 2:
        raise ValueError("need at least 2 rows to compute metrics")
    per = {n: target_metrics(t[:, i], p[:, i]) for i, n in enumerate(names)}
    avg = {}
    for m in METRICS:
        vals = [per[n][m] for n in names if not math.isnan(per[n][m])]
        avg[m] = float(np.mean(vals)) if vals else float("nan")
    return {"n": int(t.shape[0]), "targets": per, "average": avg}


def mean_labels(y: np.ndarray) -> np.ndarray:
    """Each feature's mean label over the clips labelled with it (NaN: unlabelled; NaN where no clip is), without
    numpy's empty-mean warning: the held-out folds' mean-predictor baseline (`evaluate-audio --cv`, `train-heads --cv`)."""
    known = ~np.isnan(y)
    return np.divide(np.where(known, y, 0.0).sum(0), known.sum(0), out=np.full(y.shape[1], np.nan), where=known.any(0))


def constant_labels(y: np.ndarray, names: list[str]) -> dict[str, str]:
    """Features whose labels cannot teach how the feature varies, with why: a single labelled clip, or every labelled
    clip the same value (a head fitted on them learns that constant, and its held-out r is undefined)."""
    out = {}
    for j, name in enumerate(names):
        v = y[:, j][~np.isnan(y[:, j])]
        if len(v) == 1:
            out[name] = f"only 1 clip is labelled with it ({v[0]:g})"
        elif len(v) > 1 and np.ptp(v) == 0:
            out[name] = f"all {len(v)} clips labelled with it have the same value ({v[0]:g})"
    return out


def constant_predictions(y: np.ndarray, pred: np.ndarray, names: list[str]) -> dict[str, str]:
    """Features whose r is undefined because the predictions, not the labels, are one value on the clips labelled with
    it (the labels varying, and enough clips for an r), with why: the model's '–' explained as a constant label's is."""
    out = {}
    for j, name in enumerate(names):
        known = ~np.isnan(y[:, j])
        t, p = y[known, j], np.asarray(pred, dtype=np.float64)[known, j]
        if len(t) >= MIN_PEARSON_N and np.ptp(t) > 0 and np.isfinite(p).all() and math.isnan(pearson(t, p)):
            out[name] = f"the model predicts the same value ({np.mean(p):.3g}) for all {len(t)} clips labelled with it"
    return out


def baseline_metrics(y_true: Any, y_pred: Any, names: Sequence[str]) -> dict:
    """`regression_metrics` of a baseline scored on the rows where it has a guess: a fold whose training clips lack a
    feature's label has no mean label (NaN), which made that feature's every baseline figure NaN; its `n` says how many."""
    p = _as_2d(y_pred)
    return regression_metrics(np.where(np.isnan(p), np.nan, _as_2d(y_true)), p, names)


def danceable_accuracy(y_true: Any, y_pred: Any, threshold: float = DANCEABLE_THRESHOLD) -> float:
    """Share of clips whose "danceable" verdict (value > threshold) agrees between truth and prediction, over the clips
    with a label (a NaN label was counted as "not danceable"); NaN when none has one."""
    t, p = np.asarray(y_true, dtype=np.float64).ravel(), np.asarray(y_pred, dtype=np.float64).ravel()
    known = ~np.isnan(t)
    return float(np.mean((t[known] > threshold) == (p[known] > threshold))) if known.any() else float("nan")


def constant_outputs(y_true: Any, y_pred: Any, names: Sequence[str]) -> list[str]:
    """Targets for which the model outputs (nearly) one number whatever the input, as the seed's simple CNN did."""
    t, p = _as_2d(y_true), _as_2d(y_pred)
    out = []
    for i, n in enumerate(names):
        sp, st = float(np.std(p[:, i])), float(np.std(t[:, i]))
        if sp < CONSTANT_ABS or (st > 0 and sp < CONSTANT_RATIO * st):
            out.append(n)
    return out


def report(y_true: Any, y_pred: Any, names: Sequence[str]) -> dict:
    """Metrics plus the seed's binary danceability accuracy and the constant-output check."""
    out = regression_metrics(y_true, y_pred, names)
    names = list(names)
    if "danceability" in names:
        i = names.index("danceability")
        out["danceable_accuracy"] = danceable_accuracy(_as_2d(y_true)[:, i], _as_2d(y_pred)[:, i])
    out["constant_outputs"] = constant_outputs(y_true, y_pred, names)
    return out


# ---- output formats ---------------------------------------------------------------------------


def _fmt(v: float | None, digits: int = 3) -> str:
    return "–" if _isnan(v) else f"{v:.{digits}f}"


def _fmt_n(v: float | None, m: dict, n: int, digits: int = 3) -> str:
    """A baseline's figure `v` from its metrics `m`, with the clips it was scored on when not the model's `n`
    (`baseline_metrics`), so a figure over fewer clips is not read as one over the same."""
    return _fmt(v, digits) + (f" (n={m['n']})" if m.get("n", n) != n else "")


def to_markdown(result: dict, title: str | None = None) -> str:
    """One result as a markdown table: a row per target plus the average, a column per metric."""
    lines = [f"### {title}", ""] if title else []
    lines += ["| target | " + " | ".join(m.upper() if m != "r2" else "R²" for m in METRICS) + " |",
              "|---|" + "---:|" * len(METRICS)]
    for name, vals in result["targets"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt_cell(vals, m) for m in METRICS) + " |")
    lines.append("| **average** | " + " | ".join(_fmt(result["average"][m]) for m in METRICS) + " |")
    few = few_clips(result)
    extra = [f"n = {result['n']} {_clips_said(result.get('split'))}"
             + (f" (under {MIN_MEANINGFUL_N}: too few for these figures to mean much)" if few else "")]
    extra += [f"{name} scored on {vals['n']} of the {result['n']} clips (the others lack its label)"
              for name, vals in result["targets"].items() if vals.get("n", result["n"]) < result["n"]]
    extra += _undefined_notes(result)
    if "danceable_accuracy" in result:
        extra.append(f"danceable accuracy (> {DANCEABLE_THRESHOLD}) = {result['danceable_accuracy']:.3f}")
    if result.get("constant_outputs"):
        extra.append("**constant output** (model ignores its input) for: " + ", ".join(result["constant_outputs"]))
    return "\n".join(lines + ["", "; ".join(extra)]) + "\n"


def _fmt_cell(vals: dict, m: str) -> str:
    """One target's figure `m`; a Pearson left out for too few clips says on how many ('– (n=2)'), not a bare '–'."""
    if m == "pearson" and _no_pearson(vals):
        return f"– (n={vals['n']})"
    return _fmt(vals[m])


def few_clips(result: dict) -> bool:
    """Whether a result was scored on under `MIN_MEANINGFUL_N` clips (a split of a 12-clip store holds 2)."""
    return isinstance(result.get("n"), int) and result["n"] < MIN_MEANINGFUL_N


def few_clips_warning(result: dict, name: Any) -> str | None:
    """The one-line warning for a result of bundle `name` scored on too few clips to mean much, else None."""
    if not few_clips(result):
        return None
    n = result["n"]
    r = f"; under {MIN_PEARSON_N} no Pearson r is given: 2 points always lie on a line" if n < MIN_PEARSON_N else ""
    return (f"{name}: scored on only {n} {_clips_said(result.get('split'))}: too few for the figures to mean much (under "
            f"{MIN_MEANINGFUL_N} clips a Pearson r of 0.5 cannot be told from none{r}); train on a larger store")


def _undefined_notes(result: dict) -> list[str]:
    """Notes for the figures left undefined (and out of the averages): R² of truths that barely vary, Pearson of too
    few clips, so a '–' and an average over fewer targets are explained."""
    per = result["targets"]
    flat = _r2_undefined_targets(result)
    few = [t for t, v in per.items() if _no_pearson(v) and v["n"] > 0]
    out = []
    if flat:
        out.append(f"R² undefined (–) for {', '.join(flat)}: the true values barely vary in the scored clips (std under "
                   f"{R2_MIN_STD:g} of their scale)"
                   + ("; the average R² is over the other targets" if len(flat) < len(per) else ""))
    if few:
        out.append(f"no Pearson r for {', '.join(few)}: under {MIN_PEARSON_N} clips scored")
    return out


def _r2_undefined_targets(result: dict) -> list[str]:
    """The targets of `result` scored on some clips whose R² is undefined (their truths barely vary), in its order."""
    return [t for t, v in result["targets"].items() if v.get("n", 0) >= 1 and _isnan(v["r2"])]


def _no_pearson(vals: dict) -> bool:
    """Whether `vals` (a target's or a result's figures) come from too few clips for a Pearson r (`MIN_PEARSON_N`)."""
    return vals.get("n", MIN_PEARSON_N) < MIN_PEARSON_N


def _isnan(v: Any) -> bool:
    """Whether a figure is undefined: NaN, or None as a result read back from JSON holds it."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def _clips_said(split: str | None) -> str:
    """What the scored clips are: held out for the test split (or a result without one); the train and val splits are
    clips the model fitted or was stopped on, and a table that called them held out flattered it."""
    if split in (None, "test"):
        return "held-out clips"
    if split == "train":
        return "clips of the 'train' split (the model was fitted on them: not held out)"
    if split == "val":
        return "clips of the 'val' split (they chose the model's best epoch: not fully held out)"
    return f"clips of the {split!r} split"


def _nan_to_none(o: Any) -> Any:
    if isinstance(o, float) and math.isnan(o):
        return None
    if isinstance(o, dict):
        return {k: _nan_to_none(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_nan_to_none(v) for v in o]
    if isinstance(o, (np.floating, np.integer)):
        return _nan_to_none(o.item())
    return o


def to_json(result: dict) -> str:
    """A result as strict JSON (NaN written as null)."""
    return json.dumps(_nan_to_none(result), indent=2, allow_nan=False)


def scatter_png(y_true: Any, y_pred: Any, names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Prediction-vs-truth scatter, one panel per target, written as a PNG (atomically, as every picture is)."""
    from .plotting import pyplot, save_png

    plt = pyplot()

    t, p = _as_2d(y_true), _as_2d(y_pred)
    k = len(names)
    cols = min(k, 4)
    rows = math.ceil(k / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for i, name in enumerate(names):
        ax = axes[i // cols][i % cols]
        ax.scatter(t[:, i], p[:, i], s=8, alpha=0.6)
        lo = float(min(t[:, i].min(), p[:, i].min()))
        hi = float(max(t[:, i].max(), p[:, i].max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_title(f"{name}  r={_fmt(pearson(t[:, i], p[:, i]), 2)}", fontsize=9)
        ax.set_xlabel("truth", fontsize=8)
        ax.set_ylabel("prediction", fontsize=8)
    for j in range(k, rows * cols):
        axes[j // cols][j % cols].axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_png(fig, path, dpi=100)


# ---- bundles ------------------------------------------------------------------------------------


def predict_dataset(bundle: Any, data: Any, batch_size: int = 512) -> np.ndarray:
    """Predictions of a loaded bundle over a `songfeat.data.dataset.Dataset`, in batches."""
    outs = []
    for s in range(0, len(data), batch_size):
        fe = None if data.frontend is None else data.frontend[s:s + batch_size]
        nu = None if data.numeric is None else data.numeric[s:s + batch_size]
        outs.append(bundle.predict(frontend=fe, numeric=nu))
    return np.concatenate(outs, axis=0)


def evaluate_bundle(bundle_path: str | Path, store: Any = None, *, data: Any = None, split: str = "test",
                    scatter: str | Path | None = None) -> dict:
    """Metrics of a bundle on the held-out split it recorded (or on all of `data` when given explicitly).

    With a store, the bundle's own recorded test ids are looked up in it, so the figures are on clips
    the model never trained on. Returns `report(...)` plus "model", "bundle" and "split".
    """
    from .bundle import load_bundle
    from .errors import SongfeatError, WorkFailed, counted
    from .data.dataset import dataset_for_bundle

    b = load_bundle(bundle_path)
    if data is None:
        if store is None:
            raise ValueError("give a store (or a dataset) to evaluate on")
        ids = (b.config.get("split") or {}).get(split)
        if not isinstance(ids, list):
            parts = [k for k in ("train", "val", "test") if isinstance((b.config.get("split") or {}).get(k), list)]
            hint = ("; a model fitted on labelled audio (train-heads, train-default) is scored on audio by "
                    "`songfeat evaluate-audio`") if not parts else ""
            raise SongfeatError(bundle_path, f"records no {split!r} split (it has: {', '.join(parts) or 'none'}){hint}")
        if isinstance(store, (str, Path)):
            from .data.store import open_store

            store = open_store(store)
        data = dataset_for_bundle(b.config, store, only=ids)  # the split's rows only: all of a log-mel store is GBs
        _check_ids_in(data, ids, bundle_path, store, split)
        data = data.select_ids(ids)
    if len(data) < 2:
        raise SongfeatError(bundle_path, f"its {split!r} split holds {counted(len(data), 'clip')}; metrics need at least 2")
    pred = predict_dataset(b, data)
    names = list(b.targets)
    cols = [data.target_names.index(n) for n in names]
    truth = data.targets[:, cols]
    out = report(truth, pred, names)
    out.update(model=b.config.get("model"), label=model_label(b.config), bundle=str(bundle_path), split=split,
               clips=_clips_digest(data.ids))
    if scatter:
        try:  # a full disk: the picture named, status 1 (the work ran); it read as a refusal naming the temporary
            scatter_png(truth, pred, names, scatter, title=f"{b.config.get('model')} ({split}, n={len(data)})")
        except OSError as e:
            raise WorkFailed(scatter, f"cannot write it ({e.strerror or e})") from None
        out["scatter"] = str(scatter)
    return out


def _check_ids_in(data: Any, ids: list, bundle_path: Any, store: Any, split: str) -> None:
    """All of the bundle's recorded split ids must be scored: a store that lacks some is not the one it was trained on,
    or lacks their labels; either way the figures would be on other clips than the recorded split."""
    from .data.labels import short_id
    from .errors import SongfeatError

    have = set(data.ids)
    missing = [i for i in ids if i not in have]
    if not missing:
        return
    absent = [i for i in missing if i not in store] if hasattr(store, "__contains__") else missing
    example = absent[0] if absent else missing[0]
    why = (f"{len(missing)} of the bundle's {len(ids)} {split!r} clips are not usable in this store "
           f"(e.g. {short_id(example, quote=True)}: "
           + ("not in it" if absent else "a label or input it needs is empty") + "); is it the store the bundle was trained on?")
    raise SongfeatError(getattr(store, "path", store), why)


def _clips_digest(ids: Sequence[str]) -> str:
    """A short fingerprint of which clips a result was computed on (order-free), so compare can tell unlike sets apart."""
    import hashlib

    return hashlib.sha256("\n".join(sorted(map(str, ids))).encode("utf-8")).hexdigest()[:16]


def model_label(config: dict) -> str | None:
    """A bundle's model family with the variant its `config` records that changes what it reads: numeric-mlp's (or
    the combiner's) label inputs or measured inputs (`train --numeric-source`). None when it names no model."""
    model = config.get("model")
    if not model:
        return None
    inputs = {"labels": "label inputs", "measured": "measured inputs"}.get(config.get("numeric_source"))
    return f"{model}, {inputs}" if inputs else str(model)


def compare(results: Sequence[dict], labels: Sequence[str] | None = None, metrics: Sequence[str] = ("mse", "mae"),
            pearson_table: bool = True) -> str:
    """Results side by side as markdown, like the report's Tables 1–4: a row per model, 'MSE/MAE' per target.

    Targets a model did not predict show 'X', as the seed's tables did. A second table gives Pearson.
    """
    labels = list(labels) if labels is not None else [str(r.get("model", i)) for i, r in enumerate(results)]
    targets: list[str] = []
    for r in results:
        for t in r["targets"]:
            if t not in targets:
                targets.append(t)
    head = "/".join(m.upper() for m in metrics)

    def table(ms: Sequence[str], caption: str) -> list[str]:
        lines = ["| model | " + " | ".join(f"{t} ({caption})" for t in targets) + f" | average ({caption}) |",
                 "|---|" + "---:|" * (len(targets) + 1)]
        for lab, r in zip(labels, results):
            cells = []
            for t in targets:
                v = r["targets"].get(t)
                cells.append("X" if v is None else "/".join(_fmt(v[m]) for m in ms))
            cells.append("/".join(_fmt(r["average"][m]) for m in ms))
            lines.append(f"| {lab} | " + " | ".join(cells) + " |")
        return lines

    out = table(metrics, head)
    if pearson_table:
        out += [""] + table(("pearson",), "Pearson")
    splits = {r.get("split") for r in results} - {None, "test"}
    if splits:  # `compare --split train` printed the same tables as on held-out clips, with nothing to tell them apart
        out += ["", "**note**: " + "; ".join(f"scored on {_clips_said(s)}" for s in sorted(splits))]
    if len({frozenset(r["targets"]) for r in results}) > 1:  # cnn-simple's danceability beside a five-target average
        out += ["", "**note**: each average is over that model's own targets (X: not predicted), so averages of models "
                    "with different targets are not like for like"]
    few = [f"{lab} (n={r.get('n')})" for lab, r in zip(labels, results) if few_clips(r)]
    if few:  # 2 clips gave Pearson ±1 in every cell, read as a perfect model
        out += ["", f"**note**: scored on under {MIN_MEANINGFUL_N} clips, too few for the figures to mean much: "
                    + ", ".join(few) + (f" (no Pearson r under {MIN_PEARSON_N})"
                                        if any(_no_pearson(r) for r in results) else "")]
    if "r2" in metrics:
        flat = sorted({t for r in results for t in _r2_undefined_targets(r)})
        if flat:
            out += ["", f"**note**: R² undefined (–) where the true values barely vary ({', '.join(flat)}); each average "
                        "R² is over the other targets"]
    sets = {r.get("clips") for r in results}
    if len(sets) > 1 and None not in sets:  # e.g. bundles trained on different stores, splits or seeds
        groups = ", ".join(f"{lab}: n={r.get('n')}" for lab, r in zip(labels, results))
        out += ["", f"**note**: scored on different sets of clips ({groups}): the differences mix model and data"]
    return "\n".join(out) + "\n"
