"""Accuracy on real audio: songfeat's output against Spotify's labels for the same clips.

`evaluate_audio` reads every clip once, then scores the learned features (MAE, Pearson, ... beside
a mean-predictor baseline) and the measured ones (loudness error in dB, tempo/key/mode/time-signature
agreement). With `cv=K` the parts of the default model that were fitted on the dev previews (the
stage-2 audio correction and the loudness calibration) are refitted on K-1 folds and scored on the
held-out fold, so every figure is on clips the fitted part never saw.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import features
from .analyze import Clip, content_id, get_bundle, predict_clip, read_clip
from .bundle import FITTED_CONTENT
from .data.labels import pair_table
from .data.splits import index_folds
from .descriptors import LOUDNESS_MEASURES, loudness_map
from .errors import SongfeatError, WorkFailed, analysis_failed, counted
from .evaluate import (_fmt, _fmt_n, baseline_metrics, constant_labels, constant_predictions, mean_labels, pearson,
                       regression_metrics)

TEMPO_TOLERANCE = 0.04  # relative: the usual MIREX tolerance for a tempo to count as right
MEASURED = ("loudness", "tempo", "key", "mode", "time_signature")


def _read_one(args) -> Clip | str:
    path, spec, layout = args
    try:
        return read_clip(path, spec, layout)
    except SongfeatError as e:
        return str(e)
    except Exception as e:
        return analysis_failed(path, e)


def read_clips(paths: list[str], spec, progress: bool = True, workers: int = 1,
               evidence_layout: list[dict] | None = None) -> list[Clip | str]:
    """read_clip over many files (in `workers` processes); a failed file becomes its error line."""
    from .records import map_files

    return map_files(_read_one, [(p, spec, evidence_layout) for p in paths], workers, progress)


def tempo_agreement(pred: np.ndarray, ref: np.ndarray) -> dict:
    """Share of clips whose tempo is within 4% of the reference, and within 4% up to a factor of 2."""
    rel = np.abs(pred - ref) / ref
    octave = np.min([np.abs(pred * f - ref) / ref for f in (0.5, 1.0, 2.0)], axis=0)
    return {"exact": float(np.mean(rel <= TEMPO_TOLERANCE)), "up_to_octave": float(np.mean(octave <= TEMPO_TOLERANCE)),
            "half": float(np.mean(np.abs(pred * 2 - ref) / ref <= TEMPO_TOLERANCE)),
            "double": float(np.mean(np.abs(pred / 2 - ref) / ref <= TEMPO_TOLERANCE))}


def _share(ok: np.ndarray, have: np.ndarray) -> float | None:
    """The share of `ok` among the clips that `have` a label; None when none has one (not 0%: nothing was scored)."""
    return float(np.mean(ok[have])) if have.any() else None


def measured_scores(desc: pd.DataFrame, ref: pd.DataFrame, loudness: np.ndarray | None = None) -> dict:
    """Loudness error in dB and tempo/key/mode/time-signature agreement against Spotify's values.

    Each figure is over the clips labelled with it (`labelled` counts them): a missing label is neither a miss nor a
    NaN that spoils the mean, and a measure no clip is labelled with is None.
    """
    loud = desc["loudness"].to_numpy(float) if loudness is None else np.asarray(loudness, dtype=float)
    ref_loud, ref_tempo = ref["loudness"].to_numpy(float), ref["tempo"].to_numpy(float)
    has_loud = np.isfinite(ref_loud) & np.isfinite(loud)
    has_tempo = np.isfinite(ref_tempo) & (ref_tempo > 0)
    has_key, has_mode, has_ts = (ref[c].notna().to_numpy() for c in ("key", "mode", "time_signature"))
    err = loud[has_loud] - ref_loud[has_loud]
    key_ok = desc["key"].to_numpy() == ref["key"].to_numpy()
    mode_ok = desc["mode"].to_numpy() == ref["mode"].to_numpy()
    return {
        "loudness_mae_db": float(np.mean(np.abs(err))) if err.size else None,
        "loudness_bias_db": float(np.mean(err)) if err.size else None,
        # NaN, not a numpy warning, when constant
        "loudness_pearson": pearson(loud[has_loud], ref_loud[has_loud]) if err.size > 1 else None,
        "tempo": tempo_agreement(desc["tempo"].to_numpy(float)[has_tempo], ref_tempo[has_tempo]) if has_tempo.any() else None,
        "key_exact": _share(key_ok, has_key), "mode": _share(mode_ok, has_mode),
        "key_and_mode": _share(key_ok & mode_ok, has_key & has_mode),
        "time_signature": _share(desc["time_signature"].to_numpy() == ref["time_signature"].to_numpy(), has_ts),
        "labelled": {"loudness": int(has_loud.sum()), "tempo": int(has_tempo.sum()), "key": int(has_key.sum()),
                     "mode": int(has_mode.sum()), "key_and_mode": int((has_key & has_mode).sum()),
                     "time_signature": int(has_ts.sum())},
    }


def _raw_lufs_mae(desc: pd.DataFrame, spot: np.ndarray) -> float | None:
    """MAE (dB) of the raw LUFS against Spotify's loudness, over the clips labelled with it; None when none is."""
    has = np.isfinite(spot)
    return float(np.mean(np.abs(desc["loudness_lufs"].to_numpy(float)[has] - spot[has]))) if has.any() else None


@dataclass
class _Loudness:
    """Per clip: the level reported loudness is mapped from, the level the model's loudness input is mapped from
    (`LOUDNESS_MEASURES`, by the bundle's `numeric_descriptors`), Spotify's loudness and the shipped map's loudness;
    both maps are refitted per fold (`fold`), in the stack's folds and the heads' alike."""

    level: np.ndarray
    x_in: np.ndarray
    spot: np.ndarray
    shipped: np.ndarray
    column: int | None  # the model's loudness input among its numeric inputs

    @classmethod
    def of(cls, bundle, desc: pd.DataFrame, rows: pd.DataFrame) -> "_Loudness":
        """The clips' levels (`desc`) and labels (`rows`) for `bundle`'s two loudness maps."""
        inputs = list(bundle.numeric_inputs)
        return cls(desc["loudness_level"].to_numpy(float),
                   desc[LOUDNESS_MEASURES[bundle.numeric_descriptor("loudness")]].to_numpy(float),
                   rows["loudness"].to_numpy(float), desc["loudness"].to_numpy(float),
                   inputs.index("loudness") if "loudness" in inputs else None)

    def fold(self, numeric: np.ndarray, train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One fold's (reported loudness of the test clips, a copy of `numeric` with the model's loudness input mapped
        anew): the maps refitted on the training clips that have a loudness label, the shipped maps when none has, so
        a missing loudness label does not turn every prediction into NaN."""
        numeric = numeric.copy()
        tr = train[np.isfinite(self.spot[train])]
        if tr.size == 0:
            return self.shipped[test], numeric
        slope, icpt = loudness_map(self.level[tr], self.spot[tr])
        if self.column is not None:
            s_in, i_in = loudness_map(self.x_in[tr], self.spot[tr])
            numeric[:, self.column] = np.clip(s_in * self.x_in + i_in, -60.0, 0.0)  # the range analysis gives
        return slope * self.level[test] + icpt, numeric


HEADS_ALONE = "heads alone: the ridge member blended into the bundle's outputs is not refitted in these folds"
LOO_MEAN_R = ("mean_predictor r undefined (–): without --cv each clip's guess is the mean of the other clips' labels, "
              "lower the higher its own label, so its r is -1 whatever the labels")
EXCLUDED_BY = {"content": "matched by content: the same audio",  # how evaluate-audio told the clips the model was fitted on
               "id": "matched by track id: this bundle records no content ids of its clips, so other audio under those "
                     "ids is left out too"}


def _content_or_none(path) -> str | None:
    """`analyze.content_id` of a file, None when it cannot be read (reading its audio then says why, as an error line)."""
    try:
        return content_id(path)
    except OSError:
        return None


def fitted_on(rows: pd.DataFrame, config: dict) -> tuple[np.ndarray, str]:
    """Which of `rows` (track_id, path) the bundle of `config` was fitted on, and how they were told (`EXCLUDED_BY`): by
    content id where its provenance records them (`bundle.FITTED_CONTENT`: a heads bundle's clips, a `songfeat train`
    bundle's 'train' and 'val' splits from a store that holds content ids), else by track id (older bundles and stores:
    `heads_clips`, the store splits); a stack's `stage2_ids` are matched by id."""
    prov = config.get("provenance") or {}
    ids = set(prov.get("stage2_ids") or [])
    by_id = rows["track_id"].astype(str)
    if FITTED_CONTENT in prov:
        content = {c for cs in prov[FITTED_CONTENT].values() for c in cs}
        hit = np.array([_content_or_none(p) in content for p in rows["path"]], bool)
        return hit | by_id.isin(ids).to_numpy(), "content"
    split = config.get("split") or {}  # a `songfeat train` bundle: it fitted on 'train' and stopped on 'val'
    ids |= {str(i) for k in ("train", "val") if isinstance(split.get(k), list) for i in split[k]}
    ids |= {str(i) for cs in (prov.get("heads_clips") or {}).values() for i in cs}
    return by_id.isin(ids).to_numpy(), "id"


def evaluate_audio(labels_csv: str | Path, audio_dir: str | Path, model: str | Path | None = None, cv: int | None = None,
                   seed: int = 42, workers: int = 1, progress: bool = True, clips: list[Clip | str] | None = None) -> dict:
    """Score a model (default: the shipped one) on labelled audio; see the module docstring for `cv`.

    `clips` may pass clips already read (read_clips over the paired rows, with the front-end this
    evaluation uses) so a caller that has them does not decode every file again.
    """
    from .data.labels import read_labels, short_id
    from .stack import HEAD_SPEC, head_inputs, base_outputs

    bundle = get_bundle(model)
    labels = read_labels(labels_csv)
    dropped = labels.dropped_lines()  # rows that cannot be scored are reported, never lost in silence
    rows, missing = pair_table(labels.frame, audio_dir)
    unusable = f"; {len(dropped)} label rows were unusable ({dropped[0]})" if dropped else ""
    heads = bundle.config.get("model") == "heads"
    if cv is not None:
        if bundle.config.get("model") not in ("stack", "heads"):
            raise SongfeatError(bundle.path, "--cv refits the default model's fitted parts; this bundle is not a 'stack' or 'heads' model")
        if len(rows) >= 2 and not 2 <= cv <= len(rows):  # with fewer, the check below says there is nothing to score
            raise SongfeatError(None, f"--cv must be between 2 and the number of labelled clips with audio ({len(rows)}), "
                                      f"got {cv}")
    excluded, excluded_by = [], None
    if cv is None:
        fitted, how = fitted_on(rows, bundle.config)
        if fitted.any():
            excluded, excluded_by = rows.loc[fitted, "track_id"].tolist(), how
            rows = rows[~fitted].reset_index(drop=True)
        if len(rows) < 2 and excluded:
            raise SongfeatError(bundle.path, f"this model was fitted on {len(excluded)} of these clips "
                                f"({EXCLUDED_BY[excluded_by]}), leaving {len(rows)} it never saw; use --cv K to refit "
                                f"its audio part per fold{unusable}")
    if len(rows) < 2:  # one clip has no correlation and no spread to score
        nowhere = (f"; {counted(len(missing), 'labelled id has', 'labelled ids have')} no audio file there "
                   f"(e.g. {short_id(missing[0])})" if missing else "")
        found = counted(len(rows), "labelled clip") if len(rows) else "no labelled clips"
        raise SongfeatError(labels_csv, f"{found} with audio in {audio_dir}; "
                                        f"scoring needs at least 2{unusable}{nowhere}")
    spec = bundle.frontend if "frontend" in bundle.needs else None
    layout = bundle.evidence_layout if heads else None
    if clips is None:
        clips = read_clips(rows["path"].tolist(), HEAD_SPEC if cv and not heads else spec, progress=progress, workers=workers,
                           evidence_layout=layout)
    elif len(clips) != len(rows):
        raise ValueError(f"{len(clips)} clips given for {len(rows)} labelled audio files")
    failed = [c for c in clips if isinstance(c, str)]
    keep = [i for i, c in enumerate(clips) if not isinstance(c, str)]
    if len(keep) < 2:  # the clips were read: a failure of the work (status 1), each clip's reason with it
        raise WorkFailed(audio_dir, f"fewer than 2 clips could be analysed ({len(failed)} failed{unusable})", failed)
    rows, clips = rows.loc[keep].reset_index(drop=True), [clips[i] for i in keep]
    desc = pd.DataFrame([c.descriptors.to_dict() for c in clips])
    # each feature is scored on the clips labelled with it (its `n`), as `evaluate` does; one labelled on fewer than 2
    # has no spread to score and is left out, said
    targets = [t for t in bundle.targets if t in rows.columns and rows[t].notna().sum() >= 2]
    left_out = {t: int(rows[t].isna().sum()) for t in bundle.targets if t in rows.columns and t not in targets}
    y = rows[targets].to_numpy(float)
    n = len(rows)
    result: dict = {"n_clips": n, "failed": failed, "labels_without_audio": len(missing), "ids_without_audio": missing,
                    "excluded_trained_on": len(excluded), "excluded_by": excluded_by,
                    "model": str(bundle.path), "cv": cv, "targets": targets, "labels_dropped": dropped,
                    "label_values_not_used": labels.nulled_lines(),
                    "columns_not_read": labels.unread,
                    "targets_left_out": left_out,
                    # a feature labelled all alike has no r, the model's or a baseline's: why, in train-heads' words
                    "notes": _undefined_r(constant_labels(y, targets))}

    if cv is None:
        pred = np.array([[predict_clip(bundle, c)[t] for t in targets] for c in clips])
        loo_mean = _loo_mean(y)  # leave-one-out mean: the baseline never sees its own clip
        result["learned"] = {"model": _model_metrics(result, y, pred, targets),
                             "mean_predictor": _no_r(baseline_metrics(y, loo_mean, targets))}
        result["notes"].append(LOO_MEAN_R)
        result["measured"] = measured_scores(desc, rows)
        result["predictions"] = pd.DataFrame(pred, columns=targets).assign(track_id=rows["track_id"]).to_dict("records")
        return result

    if heads:
        return _heads_cv(bundle, clips, rows, desc, y, targets, cv, seed, result)
    numeric = np.array([bundle.numeric_row(c.descriptors) for c in clips], dtype=np.float32)
    fronts = [c.frontend for c in clips]
    idx_t = [bundle.targets.index(t) for t in targets]
    stack_pred, base_pred, mean_pred, loud_cv = (np.zeros_like(y), np.zeros_like(y), np.zeros_like(y), np.zeros(n))
    loudness = _Loudness.of(bundle, desc, rows)
    for test in index_folds(n, cv, seed):
        train = np.setdiff1d(np.arange(n), test)
        # the shipped loudness map, refitted without the test fold
        loud_cv[test], fold_numeric = loudness.fold(numeric, train, test)
        base = base_outputs(bundle, fold_numeric)[:, idx_t]
        z = head_inputs(bundle, fronts, fold_numeric)
        stack_pred[test] = _stack_fold(z, y, base, train, test)
        base_pred[test] = base[test]
        mean_pred[test] = mean_labels(y[train])
    lows = np.array([features.BY_NAME[t].low for t in targets])
    highs = np.array([features.BY_NAME[t].high for t in targets])
    result["learned"] = {
        "model": _model_metrics(result, y, np.clip(stack_pred, lows, highs), targets),
        "stage1_only": regression_metrics(y, base_pred, targets),
        "mean_predictor": baseline_metrics(y, mean_pred, targets),  # NaN where a fold's training clips lack the label
    }
    return _cv_tail(result, bundle, desc, rows, y, targets, loud_cv)


def _cv_tail(result: dict, bundle, desc: pd.DataFrame, rows: pd.DataFrame, y: np.ndarray, targets: list[str],
             loud_cv: np.ndarray) -> dict:
    """`result` of a --cv run (the stack's or the heads') completed alike: the catalogue-mean baseline when the bundle
    has every target's catalogue mean, and the measured figures with the loudness each fold's refitted map gave."""
    catalogue = bundle.config.get("label_means") or {}
    if all(t in catalogue for t in targets):  # what you would guess knowing only Spotify's catalogue
        result["learned"]["catalogue_mean"] = regression_metrics(y, np.tile([catalogue[t] for t in targets], (len(y), 1)),
                                                                 targets)
    result["measured"] = measured_scores(desc, rows, loudness=loud_cv)
    result["measured"]["loudness_raw_lufs_mae_db"] = _raw_lufs_mae(desc, rows["loudness"].to_numpy(float))
    return result


def _stack_fold(z: np.ndarray, y: np.ndarray, base: np.ndarray, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """A stack model's predictions for the `test` clips with its ridge correction (`stack.fit_head`) refitted on
    the `train` clips labelled with each feature (NaN: unlabelled): one ridge per set of features labelled on the same
    clips, so with every label known it is the one fit on all of them; under 2 labelled clips, stage 1's prediction."""
    from .stack import fit_head

    out = np.array(base[test], dtype=np.float64)
    known = ~np.isnan(y[train])
    for mask in np.unique(known.T, axis=0):
        cols = np.flatnonzero((known.T == mask).all(1))
        tr = train[mask]
        if tr.size >= 2:
            w, b, zm, zs, _ = fit_head(z[tr], y[np.ix_(tr, cols)] - base[np.ix_(tr, cols)])
            w, b = w.reshape(len(cols), -1), np.reshape(b, len(cols))  # RidgeCV gives a lone target's as 1-D
            out[:, cols] = base[np.ix_(test, cols)] + ((z[test] - zm) / zs) @ w.T + b
    return out


def _undefined_r(why: dict[str, str]) -> list[str]:
    """The notes for features whose r is undefined ("–"), each with why (`evaluate.constant_labels`, ...)."""
    return [f"{t}: r undefined (–): {reason}" for t, reason in why.items()]


def _model_metrics(result: dict, y: np.ndarray, pred: np.ndarray, targets: list[str]) -> dict:
    """`regression_metrics` of the model's predictions, a feature whose r they leave undefined (one value on every clip
    labelled with it) named in `result["notes"]` with why, as a constant label is: its "–" was not explained."""
    result["notes"] += _undefined_r(constant_predictions(y, pred, targets))
    return regression_metrics(y, pred, targets)


def _no_r(metrics: dict) -> dict:
    """`metrics` (`regression_metrics`) with every Pearson r undefined (NaN): the leave-one-out mean's, whose r is -1
    whatever the labels (`LOO_MEAN_R`), printed as "–" rather than a figure that reads as a perfectly wrong guess."""
    for m in (*metrics["targets"].values(), metrics["average"]):
        m["pearson"] = float("nan")
    return metrics


def _loo_mean(y: np.ndarray) -> np.ndarray:
    """Per clip and feature, the mean label of the other clips labelled with it (NaN labels skipped; NaN where no other
    clip has it): the mean-predictor baseline that never sees its own clip."""
    known = ~np.isnan(y)
    vals = np.where(known, y, 0.0)
    total, count = vals.sum(0, keepdims=True) - vals, known.sum(0, keepdims=True) - known
    return np.divide(total, count, out=np.full(y.shape, np.nan), where=count > 0)


def _heads_cv(bundle, clips, rows, desc, y, targets, cv, seed, result) -> dict:
    """K-fold refit of a heads model's heads (and the loudness calibration) on these clips alone.

    Each fold's heads see only the other folds of this set (no other source, no behaviour bounds), so the
    figure is a within-set one; `songfeat evaluate-sources` gives the shift-revealing one. The folds' fits are
    `own_heads.held_out_predictions`, train-heads' own held-out score.
    """
    from .heads import FitConfig, nets_layout, part_columns
    from .own_heads import held_out_predictions

    fitd = dict(bundle.config.get("split", {}).get("heads", {}).get("fit") or {})
    if "residual" in fitd:
        fitd["residual"] = tuple(fitd["residual"])
    cfg = FitConfig(**fitd)
    n = len(clips)
    idx_t = [bundle.targets.index(t) for t in targets]
    loudness = _Loudness.of(bundle, desc, rows)
    numeric = np.array([bundle.numeric_row(c.descriptors) for c in clips], dtype=np.float32)
    full = np.full((n, len(bundle.targets)), np.nan)
    full[:, idx_t] = y
    loud_cv = np.zeros(n)
    # the same in every fold; only the nets' columns: the default's ridge member (on the trailing MFCC-summary columns)
    # is not refitted here, so the figure is the heads alone (`songfeat evaluate-sources` scores the blend)
    n_ev = int(bundle.config.get("hparams", {}).get("n_evidence") or np.asarray(clips[0].evidence).shape[1])  # nets' own
    rows_ev = [np.asarray(c.evidence)[:, :n_ev] for c in clips]
    heads_layout = nets_layout(bundle.config["evidence_layout"])

    def fold_numeric(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        """The standardised stage-1 inputs with the loudness calibration refitted on `train` (`_Loudness.fold`)."""
        loud_cv[test], num = loudness.fold(numeric, train, test)
        return bundle.normalise("numeric", num)

    pred, mean_pred, _ = held_out_predictions(bundle, rows_ev, [c.weights for c in clips], full, fold_numeric,
                                              index_folds(n, cv, seed), cfg, part_columns(heads_layout))
    pred, mean_pred = pred[:, idx_t], mean_pred[:, idx_t]
    result["learned"] = {"model": _model_metrics(result, y, pred, targets),
                         "mean_predictor": baseline_metrics(y, mean_pred, targets)}
    if bundle.config.get("hparams", {}).get("ridge_inputs"):
        result["notes"].append(HEADS_ALONE)
        result["note"] = HEADS_ALONE  # its own key before `notes` held every note: kept for -f json's readers
    return _cv_tail(result, bundle, desc, rows, y, targets, loud_cv)


def learned_table(learned: dict, targets: list[str], n_clips: int) -> list[str]:
    """The markdown rows of the learned features' table: MAE and r of the model and of each baseline in `learned` (name
    -> `regression_metrics`), a row per target and the average; evaluate-audio's and train-heads' held-out table."""
    cols = list(learned)
    lines = ["| feature | " + " | ".join(f"{c} MAE | {c} r" for c in cols) + " | clips |",
             "|" + "---|" * (2 + 2 * len(cols))]
    for t in list(targets) + ["average"]:
        cells = []
        n = n_clips if t == "average" else learned["model"]["targets"][t]["n"]
        for c in cols:
            m = learned[c]["average"] if t == "average" else learned[c]["targets"][t]
            # "–" where undefined (a constant guess has no r); a baseline scored on fewer clips says on how many
            cells += [_fmt_n(m["mae"], m, n), _fmt(m["pearson"], 2)]
        # each feature is scored on the clips labelled with it
        cells.append(str(n))
        lines.append(f"| {'**average**' if t == 'average' else t} | " + " | ".join(cells) + " |")
    return lines


def to_markdown(result: dict) -> str:
    """The accuracy report as markdown: learned features (model vs baselines) then measured ones."""
    lines = [f"Clips: {result['n_clips']}" + (f", {result['cv']}-fold cross-validation" if result["cv"] else "")
             + (f"; {len(result['failed'])} failed" if result["failed"] else "")
             + (f"; {counted(len(result['labels_dropped']), 'label row')} dropped" if result.get("labels_dropped") else "")
             + (f"; {counted(len(result['label_values_not_used']), 'label value')} out of range, read as missing"
                if result.get("label_values_not_used") else "")
             + (f"; {counted(result['labels_without_audio'], 'labelled id')} without audio"
                if result.get("labels_without_audio") else "")
             + (f"; {result['excluded_trained_on']} left out (the model was fitted on them; "
                f"{EXCLUDED_BY[result['excluded_by']]})"
                if result.get("excluded_trained_on") else "")
             + ("; not scored (some clips lack the label): " + ", ".join(f"{t} ({k} missing)" for t, k in
                                                                         result["targets_left_out"].items())
                if result.get("targets_left_out") else ""), "",
             *learned_table(result["learned"], result["targets"], result["n_clips"]),
             *(line for note in result.get("notes") or [] for line in ("", f"**note**: {note}"))]
    m = result["measured"]
    tp = m["tempo"] or {}
    n_lab = m.get("labelled") or {}

    def cell(value: float | None, fmt: str, labelled: str, more: str = "") -> str:
        """A measured figure (then `more`), a dash when no clip has the label, and the count when only some have."""
        if value is None:
            return "– (no clip labelled)"
        k = n_lab.get(labelled, result["n_clips"])
        return format(value, fmt) + more + (f" ({k} of {result['n_clips']} clips labelled)" if k < result["n_clips"] else "")

    r = m["loudness_pearson"]
    loud = cell(m["loudness_mae_db"], ".2f", "loudness",
                "" if m["loudness_bias_db"] is None else f" (bias {m['loudness_bias_db']:+.2f}, r {_fmt(r, 2)})")
    lines += ["", "| measured | value |", "|---|---|",
              f"| loudness MAE (dB) | {loud} |",
              f"| tempo within 4% | {cell(tp.get('exact'), '.0%', 'tempo')} |",
              f"| tempo within 4% up to x2 or /2 | {cell(tp.get('up_to_octave'), '.0%', 'tempo')} |",
              f"| key exact | {cell(m['key_exact'], '.0%', 'key')} |", f"| mode | {cell(m['mode'], '.0%', 'mode')} |",
              f"| key and mode | {cell(m['key_and_mode'], '.0%', 'key_and_mode')} |",
              f"| time signature | {cell(m['time_signature'], '.0%', 'time_signature')} |"]
    if "loudness_raw_lufs_mae_db" in m:
        lines.append(f"| loudness MAE before calibration, raw LUFS (dB) | {cell(m['loudness_raw_lufs_mae_db'], '.2f', 'loudness')} |")
    return "\n".join(lines) + "\n"
