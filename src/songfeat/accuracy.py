"""Accuracy on real audio: songfeat's output against Spotify's labels for the same clips.

`evaluate_audio` reads every clip once, then scores the learned features (MAE, Pearson, ... beside
a mean-predictor baseline) and the measured ones (loudness error in dB, tempo/key/mode/time-signature
agreement). With `cv=K` the parts of the default model that were fitted on the dev previews (the
stage-2 audio correction and the loudness calibration) are refitted on K-1 folds and scored on the
held-out fold, so every figure is on clips the fitted part never saw.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import features
from .analyze import Clip, get_bundle, predict_clip, read_clip
from .descriptors import LOUDNESS_MEASURES, loudness_map
from .errors import SongfeatError
from .evaluate import pearson, regression_metrics

TEMPO_TOLERANCE = 0.04  # relative: the usual MIREX tolerance for a tempo to count as right
MEASURED = ("loudness", "tempo", "key", "mode", "time_signature")


def _read_one(args) -> Clip | str:
    path, spec, layout = args
    try:
        return read_clip(path, spec, layout)
    except SongfeatError as e:
        return str(e)
    except Exception as e:
        return f"{path}: analysis failed ({type(e).__name__}: {e})"


def read_clips(paths: list[str], spec, progress: bool = True, workers: int = 1,
               evidence_layout: list[dict] | None = None) -> list[Clip | str]:
    """read_clip over many files (in `workers` processes); a failed file becomes its error line."""
    from .records import map_files

    return map_files(_read_one, [(p, spec, evidence_layout) for p in paths], workers, progress)


def pair_labels_audio(labels_csv: str | Path, audio_dir: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """Labels joined to audio files by track id (= file stem); returns (rows with a 'path' column, ids without audio)."""
    from .data.labels import read_labels

    return pair_table(read_labels(labels_csv).frame, audio_dir)


def pair_table(table: pd.DataFrame, audio_dir: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """`pair_labels_audio` for a label frame already read: files are found as `build` finds them
    (`data.labels.index_audio`), a second file for one id said in a SongfeatWarning and the first by name used."""
    audio_dir = Path(audio_dir)
    if not audio_dir.is_dir():
        raise SongfeatError(audio_dir, "audio folder not found")
    from .data.labels import index_audio

    ids = table["track_id"].astype(str)
    found, _unlabelled, _repeats = index_audio(audio_dir, set(ids), table.attrs.get("id_kind", "spotify"))
    table = table.assign(path=[str(found[t]) if t in found else None for t in ids])
    missing = table.loc[table["path"].isna(), "track_id"].astype(str).tolist()
    return table.dropna(subset=["path"]).reset_index(drop=True), missing


def tempo_agreement(pred: np.ndarray, ref: np.ndarray) -> dict:
    """Share of clips whose tempo is within 4% of the reference, and within 4% up to a factor of 2."""
    rel = np.abs(pred - ref) / ref
    octave = np.min([np.abs(pred * f - ref) / ref for f in (0.5, 1.0, 2.0)], axis=0)
    return {"exact": float(np.mean(rel <= TEMPO_TOLERANCE)), "up_to_octave": float(np.mean(octave <= TEMPO_TOLERANCE)),
            "half": float(np.mean(np.abs(pred * 2 - ref) / ref <= TEMPO_TOLERANCE)),
            "double": float(np.mean(np.abs(pred / 2 - ref) / ref <= TEMPO_TOLERANCE))}


def measured_scores(desc: pd.DataFrame, ref: pd.DataFrame, loudness: np.ndarray | None = None) -> dict:
    """Loudness error in dB and tempo/key/mode/time-signature agreement against Spotify's values."""
    loud = desc["loudness"].to_numpy(float) if loudness is None else loudness
    err = loud - ref["loudness"].to_numpy(float)
    key_ok = desc["key"].to_numpy() == ref["key"].to_numpy()
    mode_ok = desc["mode"].to_numpy() == ref["mode"].to_numpy()
    return {
        "loudness_mae_db": float(np.mean(np.abs(err))), "loudness_bias_db": float(np.mean(err)),
        "loudness_pearson": pearson(loud, ref["loudness"].to_numpy(float)),  # NaN, not a numpy warning, when constant
        "tempo": tempo_agreement(desc["tempo"].to_numpy(float), ref["tempo"].to_numpy(float)),
        "key_exact": float(np.mean(key_ok)), "mode": float(np.mean(mode_ok)), "key_and_mode": float(np.mean(key_ok & mode_ok)),
        "time_signature": float(np.mean(desc["time_signature"].to_numpy() == ref["time_signature"].to_numpy())),
    }


def _folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    return np.array_split(np.random.default_rng(seed).permutation(n), k)


def evaluate_audio(labels_csv: str | Path, audio_dir: str | Path, model: str | Path | None = None, cv: int | None = None,
                   seed: int = 42, workers: int = 1, progress: bool = True, clips: list[Clip | str] | None = None) -> dict:
    """Score a model (default: the shipped one) on labelled audio; see the module docstring for `cv`.

    `clips` may pass clips already read (read_clips over the paired rows, with the front-end this
    evaluation uses) so a caller that has them does not decode every file again.
    """
    from .data.labels import read_labels
    from .default_model import HEAD_SPEC, fit_head, head_inputs, base_outputs

    bundle = get_bundle(model)
    labels = read_labels(labels_csv)
    dropped = labels.dropped_lines()  # rows that cannot be scored are reported, never lost in silence
    rows, missing = pair_table(labels.frame, audio_dir)
    unusable = f"; {len(dropped)} label rows were unusable ({dropped[0]})" if dropped else ""
    heads = bundle.config.get("model") == "heads"
    if cv is not None:
        if bundle.config.get("model") not in ("stack", "heads"):
            raise SongfeatError(bundle.path, "--cv refits the default model's fitted parts; this bundle is not a 'stack' or 'heads' model")
        if cv < 2 or cv > len(rows):
            raise SongfeatError(None, f"--cv must be between 2 and the number of clips ({len(rows)}), got {cv}")
    prov = bundle.config.get("provenance") or {}
    trained_on = set(prov.get("stage2_ids") or []) | {i for ids in (prov.get("heads_clips") or {}).values() for i in ids}
    split = bundle.config.get("split") or {}  # a `songfeat train` bundle: it fitted on 'train' and stopped on 'val'
    trained_on |= {str(i) for k in ("train", "val") if isinstance(split.get(k), list) for i in split[k]}
    excluded = []
    if cv is None and trained_on:
        excluded = rows.loc[rows["track_id"].isin(trained_on), "track_id"].tolist()
        rows = rows[~rows["track_id"].isin(trained_on)].reset_index(drop=True)
        if len(rows) < 2 and excluded:
            raise SongfeatError(bundle.path, f"this model was fitted on {len(excluded)} of these clips, leaving "
                                f"{len(rows)} it never saw; use --cv K to refit its audio part per fold{unusable}")
    if len(rows) < 2:  # one clip has no correlation and no spread to score
        raise SongfeatError(labels_csv, f"{len(rows)} labelled clip{'s' * (len(rows) != 1)} with audio in {audio_dir}; "
                                        f"scoring needs at least 2{unusable}")
    spec = bundle.frontend if "frontend" in bundle.needs else None
    layout = bundle.evidence_layout if heads else None
    if clips is None:
        clips = read_clips(rows["path"].tolist(), HEAD_SPEC if cv and not heads else spec, progress=progress, workers=workers,
                           evidence_layout=layout)
    elif len(clips) != len(rows):
        raise ValueError(f"{len(clips)} clips given for {len(rows)} labelled audio files")
    failed = [c for c in clips if isinstance(c, str)]
    keep = [i for i, c in enumerate(clips) if not isinstance(c, str)]
    if len(keep) < 2:
        raise SongfeatError(audio_dir, f"fewer than 2 clips could be analysed ({len(failed)} failed{unusable})")
    rows, clips = rows.loc[keep].reset_index(drop=True), [clips[i] for i in keep]
    desc = pd.DataFrame([c.descriptors.to_dict() for c in clips])
    targets = [t for t in bundle.targets if t in rows.columns and rows[t].notna().all()]
    left_out = {t: int(rows[t].isna().sum()) for t in bundle.targets if t in rows.columns and t not in targets}
    y = rows[targets].to_numpy(float)
    n = len(rows)
    result: dict = {"n_clips": n, "failed": failed, "labels_without_audio": len(missing), "excluded_trained_on": len(excluded),
                    "model": str(bundle.path), "cv": cv, "targets": targets, "labels_dropped": dropped,
                    "targets_left_out": left_out}

    if cv is None:
        pred = np.array([[predict_clip(bundle, c)[t] for t in targets] for c in clips])
        loo_mean = (y.sum(0, keepdims=True) - y) / (n - 1)  # leave-one-out mean: the baseline never sees its own clip
        result["learned"] = {"model": regression_metrics(y, pred, targets), "mean_predictor": regression_metrics(y, loo_mean, targets)}
        result["measured"] = measured_scores(desc, rows)
        result["predictions"] = pd.DataFrame(pred, columns=targets).assign(track_id=rows["track_id"]).to_dict("records")
        return result

    if heads:
        return _heads_cv(bundle, clips, rows, desc, y, targets, cv, seed, result)
    numeric = np.array([bundle.numeric_row(c.descriptors) for c in clips], dtype=np.float32)
    fronts = [c.frontend for c in clips]
    idx_t = [bundle.targets.index(t) for t in targets]
    loud_col = list(bundle.numeric_inputs).index("loudness") if "loudness" in bundle.numeric_inputs else None
    stack_pred, base_pred, mean_pred, loud_cv = (np.zeros_like(y), np.zeros_like(y), np.zeros_like(y), np.zeros(n))
    level, x_in, spot = _loudness_levels(bundle, desc, rows)
    for test in _folds(n, cv, seed):
        train = np.setdiff1d(np.arange(n), test)
        slope, icpt = loudness_map(level[train], spot[train])  # the shipped loudness map, refitted without the test fold
        loud_cv[test] = slope * level[test] + icpt
        fold_numeric = numeric.copy()
        if loud_col is not None:
            s_in, i_in = loudness_map(x_in[train], spot[train])
            fold_numeric[:, loud_col] = np.clip(s_in * x_in + i_in, -60.0, 0.0)  # the range analysis gives, as the heads path does
        base = base_outputs(bundle, fold_numeric)[:, idx_t]
        z = head_inputs(bundle, fronts, fold_numeric)
        w, b, zm, zs, _ = fit_head(z[train], y[train] - base[train])
        stack_pred[test] = base[test] + ((z[test] - zm) / zs) @ w.T + b
        base_pred[test] = base[test]
        mean_pred[test] = y[train].mean(0)
    catalogue = bundle.config.get("label_means") or {}
    lows = np.array([features.BY_NAME[t].low for t in targets])
    highs = np.array([features.BY_NAME[t].high for t in targets])
    result["learned"] = {
        "model": regression_metrics(y, np.clip(stack_pred, lows, highs), targets),
        "stage1_only": regression_metrics(y, base_pred, targets),
        "mean_predictor": regression_metrics(y, mean_pred, targets),
    }
    if all(t in catalogue for t in targets):  # what you would guess knowing only Spotify's catalogue
        result["learned"]["catalogue_mean"] = regression_metrics(y, np.tile([catalogue[t] for t in targets], (n, 1)), targets)
    result["measured"] = measured_scores(desc, rows, loudness=loud_cv)
    result["measured"]["loudness_raw_lufs_mae_db"] = float(np.mean(np.abs(desc["loudness_lufs"].to_numpy(float) - spot)))
    return result


def _loudness_levels(bundle, desc: pd.DataFrame, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per clip: the level reported loudness is mapped from, the level the model's loudness input is mapped from
    (`LOUDNESS_MEASURES`, by the bundle's `numeric_descriptors`), and Spotify's loudness; each map is refitted per fold."""
    x_in = desc[LOUDNESS_MEASURES[bundle.numeric_descriptor("loudness")]].to_numpy(float)
    return desc["loudness_level"].to_numpy(float), x_in, rows["loudness"].to_numpy(float)


def _heads_cv(bundle, clips, rows, desc, y, targets, cv, seed, result) -> dict:
    """K-fold refit of a heads model's heads (and the loudness calibration) on these clips alone.

    Each fold's heads see only the other folds of this set (no other source, no behaviour bounds), so the
    figure is a within-set one; `songfeat evaluate-sources` gives the shift-revealing one.
    """
    from .heads import FitConfig, fit_heads, intervals_from_labels, nets_layout, part_columns, predict_rows
    from .sources import new_heads

    fitd = dict(bundle.config.get("split", {}).get("heads", {}).get("fit") or {})
    if "residual" in fitd:
        fitd["residual"] = tuple(fitd["residual"])
    cfg = FitConfig(**fitd)
    n = len(clips)
    idx_t = [bundle.targets.index(t) for t in targets]
    level, x_in, spot = _loudness_levels(bundle, desc, rows)
    li = list(bundle.numeric_inputs).index("loudness")
    numeric = np.array([bundle.numeric_row(c.descriptors) for c in clips], dtype=np.float32)
    full = np.full((n, len(bundle.targets)), np.nan)
    full[:, idx_t] = y
    pred, mean_pred, loud_cv = np.zeros_like(y), np.zeros_like(y), np.zeros(n)
    # the same in every fold; only the nets' columns: the default's ridge member (on the trailing MFCC-summary columns)
    # is not refitted here, so the figure is the heads alone (`songfeat evaluate-sources` scores the blend)
    n_ev = int(bundle.config.get("hparams", {}).get("n_evidence") or np.asarray(clips[0].evidence).shape[1])  # nets' own
    rows_ev = [np.asarray(c.evidence)[:, :n_ev] for c in clips]
    heads_layout = nets_layout(bundle.config["evidence_layout"])
    if bundle.config.get("hparams", {}).get("ridge_inputs"):
        result["note"] = "heads alone: the ridge member blended into the bundle's outputs is not refitted in these folds"
    for test in _folds(n, cv, seed):
        train = np.setdiff1d(np.arange(n), test)
        slope, icpt = loudness_map(level[train], spot[train])
        loud_cv[test] = slope * level[test] + icpt
        num = numeric.copy()
        s_in, i_in = loudness_map(x_in[train], spot[train])
        num[:, li] = np.clip(s_in * x_in + i_in, -60.0, 0.0)
        num_std = bundle.normalise("numeric", num)
        ev = np.concatenate([rows_ev[i] for i in train])
        nrep = np.concatenate([np.repeat(num_std[i:i + 1], len(rows_ev[i]), axis=0) for i in train])
        w = np.concatenate([clips[i].weights / clips[i].weights.sum() for i in train])
        lo, hi = intervals_from_labels(np.concatenate([np.repeat(full[i:i + 1], len(rows_ev[i]), axis=0) for i in train]))
        model = new_heads(bundle, ev.shape[1], cfg)
        fit_heads(model, ev, nrep, lo, hi, w, cfg, part_columns(heads_layout))
        model.eval()
        for i in test:
            p = predict_rows(model, rows_ev[i], np.repeat(num_std[i:i + 1], len(rows_ev[i]), axis=0))
            pred[i] = np.average(p, axis=0, weights=clips[i].weights)[idx_t]
        mean_pred[test] = y[train].mean(0)
    catalogue = bundle.config.get("label_means") or {}
    result["learned"] = {"model": regression_metrics(y, pred, targets), "mean_predictor": regression_metrics(y, mean_pred, targets)}
    if all(t in catalogue for t in targets):
        result["learned"]["catalogue_mean"] = regression_metrics(y, np.tile([catalogue[t] for t in targets], (n, 1)), targets)
    result["measured"] = measured_scores(desc, rows, loudness=loud_cv)
    result["measured"]["loudness_raw_lufs_mae_db"] = float(np.mean(np.abs(desc["loudness_lufs"].to_numpy(float) - spot)))
    return result


def to_markdown(result: dict) -> str:
    """The accuracy report as markdown: learned features (model vs baselines) then measured ones."""
    learned = result["learned"]
    cols = list(learned)
    head = "| feature | " + " | ".join(f"{c} MAE | {c} r" for c in cols) + " |"
    lines = [f"Clips: {result['n_clips']}" + (f", {result['cv']}-fold cross-validation" if result["cv"] else "")
             + (f"; {len(result['failed'])} failed" if result["failed"] else "")
             + (f" ({result['note']})" if result.get("note") else "")
             + (f"; {len(result['labels_dropped'])} label rows dropped" if result.get("labels_dropped") else "")
             + ("; not scored (some clips lack the label): " + ", ".join(f"{t} ({k} missing)" for t, k in
                                                                         result["targets_left_out"].items())
                if result.get("targets_left_out") else ""), "", head,
             "|" + "---|" * (1 + 2 * len(cols))]
    for t in result["targets"] + ["average"]:
        cells = []
        for c in cols:
            m = learned[c]["average"] if t == "average" else learned[c]["targets"][t]
            cells += [f"{m['mae']:.3f}", f"{m['pearson']:.2f}"]
        lines.append(f"| {'**average**' if t == 'average' else t} | " + " | ".join(cells) + " |")
    m = result["measured"]
    tp = m["tempo"]
    lines += ["", "| measured | value |", "|---|---|",
              f"| loudness MAE (dB) | {m['loudness_mae_db']:.2f} (bias {m['loudness_bias_db']:+.2f}, r {m['loudness_pearson']:.2f}) |",
              f"| tempo within 4% | {tp['exact']:.0%} |", f"| tempo within 4% up to x2 or /2 | {tp['up_to_octave']:.0%} |",
              f"| key exact | {m['key_exact']:.0%} |", f"| mode | {m['mode']:.0%} |", f"| key and mode | {m['key_and_mode']:.0%} |",
              f"| time signature | {m['time_signature']:.0%} |"]
    if "loudness_raw_lufs_mae_db" in m:
        lines.append(f"| loudness MAE before calibration, raw LUFS (dB) | {m['loudness_raw_lufs_mae_db']:.2f} |")
    return "\n".join(lines) + "\n"
